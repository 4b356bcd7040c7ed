// pproftime: sets when a profile was captured, so specs can upload profiles "taken" at chosen
// times: profile.Parse, set TimeNanos (and DurationNanos when given), profile.Write.
//
//	pproftime -o OUT -time T [-duration D] IN
//
// T is Unix nanoseconds or an RFC 3339 time; 0 removes time_nanos (the field is then absent
// from the output). D is nanoseconds or a Go duration ("30s"). Errors go to stderr, exit 1.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/google/pprof/profile"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func parseTime(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixNano(), nil
}

func parseDuration(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	d, err := time.ParseDuration(s)
	return int64(d), err
}

func main() {
	out := flag.String("o", "", "output file")
	at := flag.String("time", "", "time_nanos: Unix nanoseconds or RFC 3339 (0 removes it)")
	dur := flag.String("duration", "", "duration_nanos: nanoseconds or a Go duration (default: unchanged)")
	flag.Parse()
	if *out == "" || *at == "" || flag.NArg() != 1 {
		fail("usage: pproftime -o OUT -time T [-duration D] IN")
	}
	nanos, err := parseTime(*at)
	if err != nil {
		fail("time: %v", err)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fail("parse: %v", err)
	}
	p, err := profile.Parse(f)
	f.Close()
	if err != nil {
		fail("parse: %v", err)
	}
	p.TimeNanos = nanos
	if *dur != "" {
		d, err := parseDuration(*dur)
		if err != nil {
			fail("duration: %v", err)
		}
		p.DurationNanos = d
	}
	w, err := os.Create(*out)
	if err != nil {
		fail("write: %v", err)
	}
	if err := p.Write(w); err != nil {
		fail("write: %v", err)
	}
	if err := w.Close(); err != nil {
		fail("write: %v", err)
	}
}
