// histload: the uploads of bench/history and the Go reference merge of the same uploads. Upload i
// (0 <= i < hours*per-hour) is pool profile i%K, uncompressed, with time_nanos set to
// start + hour(i)*1h + slot(i)*(1h/per-hour) + 1s: the bytes are rebuilt identically in both modes.
//
//	histload -pool DIR -k K -hours H -per-hour P -start UNIXSEC -upload URL [-c 4]
//	    posts every upload; prints one JSON line {uploads, errors, seconds, per_second, bytes}
//	histload -pool DIR -k K -hours H -per-hour P -start UNIXSEC -merge OUT [-batch N]
//	    profile.ParseData each upload and profile.Merge them into a running result N at a time
//	    (memory bounded by N inputs); prints {uploads, seconds}
//
// Pool files are DIR/0.pb.gz .. DIR/K-1.pb.gz (pprofgen output).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/pprof/profile"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "histload: "+format+"\n", args...)
	os.Exit(1)
}

func varint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

type uploads struct {
	pool           [][]byte // raw protobuf, without time_nanos
	hours, perHour int
	start          int64
}

func (u *uploads) n() int { return u.hours * u.perHour }

func (u *uploads) timeOf(i int) int64 {
	hour, slot := int64(i/u.perHour), int64(i%u.perHour)
	return (u.start + hour*3600 + slot*3600/int64(u.perHour) + 1) * 1e9
}

// body: the pool profile's bytes with field 9 (time_nanos) appended.
func (u *uploads) body(i int) []byte {
	raw := u.pool[i%len(u.pool)]
	b := make([]byte, len(raw), len(raw)+12)
	copy(b, raw)
	b = varint(b, 9<<3)
	return varint(b, uint64(u.timeOf(i)))
}

func main() {
	poolDir := flag.String("pool", "", "directory of pool profiles")
	k := flag.Int("k", 60, "pool profiles")
	hours := flag.Int("hours", 168, "hours of uploads")
	perHour := flag.Int("per-hour", 60, "uploads per hour")
	start := flag.Int64("start", 0, "Unix seconds of the first hour")
	uploadURL := flag.String("upload", "", "POST every upload to this URL")
	conc := flag.Int("c", 4, "concurrent uploads")
	mergeOut := flag.String("merge", "", "merge every upload (Go reference) into this file")
	batch := flag.Int("batch", 60, "uploads merged into the running result at a time")
	flag.Parse()
	if *poolDir == "" || *start == 0 || (*uploadURL == "") == (*mergeOut == "") {
		fail("usage: histload -pool DIR -k K -hours H -per-hour P -start UNIXSEC (-upload URL | -merge OUT)")
	}
	u := &uploads{hours: *hours, perHour: *perHour, start: *start}
	for i := 0; i < *k; i++ {
		path := fmt.Sprintf("%s/%d.pb.gz", *poolDir, i)
		f, err := os.Open(path)
		if err != nil {
			fail("%v", err)
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			fail("%s: %v", path, err)
		}
		p.TimeNanos = 0
		var buf bytes.Buffer
		if err := p.WriteUncompressed(&buf); err != nil {
			fail("%v", err)
		}
		u.pool = append(u.pool, buf.Bytes())
	}
	t0 := time.Now()
	out := map[string]interface{}{"uploads": u.n()}
	if *uploadURL != "" {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxIdleConns: *conc},
			Timeout: 300 * time.Second}
		var next, errors, sent int64
		next = -1
		var wg sync.WaitGroup
		for c := 0; c < *conc; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(atomic.AddInt64(&next, 1))
					if i >= u.n() {
						return
					}
					body := u.body(i)
					resp, err := client.Post(*uploadURL, "application/octet-stream", bytes.NewReader(body))
					if err != nil {
						atomic.AddInt64(&errors, 1)
						fmt.Fprintf(os.Stderr, "histload: upload %d: %v\n", i, err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
						atomic.AddInt64(&errors, 1)
						fmt.Fprintf(os.Stderr, "histload: upload %d: status %d\n", i, resp.StatusCode)
						continue
					}
					atomic.AddInt64(&sent, int64(len(body)))
				}
			}()
		}
		wg.Wait()
		out["errors"] = errors
		out["bytes"] = sent
	} else {
		var acc *profile.Profile
		for lo := 0; lo < u.n(); lo += *batch {
			var ps []*profile.Profile
			if acc != nil {
				ps = append(ps, acc)
			}
			for i := lo; i < lo+*batch && i < u.n(); i++ {
				p, err := profile.ParseData(u.body(i))
				if err != nil {
					fail("parse %d: %v", i, err)
				}
				ps = append(ps, p)
			}
			var err error
			if acc, err = profile.Merge(ps); err != nil {
				fail("merge: %v", err)
			}
		}
		f, err := os.Create(*mergeOut)
		if err != nil {
			fail("%v", err)
		}
		if err := acc.Write(f); err != nil {
			fail("%v", err)
		}
		if err := f.Close(); err != nil {
			fail("%v", err)
		}
	}
	secs := time.Since(t0).Seconds()
	out["seconds"] = secs
	out["per_second"] = float64(u.n()) / secs
	json.NewEncoder(os.Stdout).Encode(out)
}
