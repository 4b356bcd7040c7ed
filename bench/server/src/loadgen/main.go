// loadgen: the client of bench/server. N concurrent clients (keep-alive connections) post a
// profile file (or, with -file A,B,..., each file in turn: uploads that differ) to URL in a loop for a duration after a warm-up, and it prints one JSON line:
// uploads (201s), errors, uploads/s, p50 and p99 latency in milliseconds. With -ca (an https://
// URL) it verifies the server with that CA; -h2 offers HTTP/2 by ALPN as Go's default client does
// (one connection, the clients' requests multiplexed on it).
//
//	loadgen -url http://127.0.0.1:8080/api/profile/app -file P -c 16 -d 10s -warmup 2s [-token T]
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "upload URL")
	file := flag.String("file", "", "profile to post (a comma-separated list: posted in turn)")
	conc := flag.Int("c", 1, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "measured duration")
	warm := flag.Duration("warmup", 2*time.Second, "warm-up before measuring")
	token := flag.String("token", "", "bearer token to send (Authorization: Bearer)")
	ca := flag.String("ca", "", "PEM file of the CA that verifies an https:// server")
	h2 := flag.Bool("h2", false, "offer HTTP/2 (ALPN) over TLS")
	flag.Parse()
	var bodies [][]byte
	for _, f := range strings.Split(*file, ",") {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bodies = append(bodies, b)
	}
	var turn uint64
	tr := &http.Transport{MaxIdleConnsPerHost: *conc, MaxIdleConns: *conc, ForceAttemptHTTP2: *h2}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}

	start := time.Now()
	measureFrom := start.Add(*warm)
	end := measureFrom.Add(*dur)
	var mu sync.Mutex
	var lat []float64
	errors := 0
	var wg sync.WaitGroup
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				body := bodies[(atomic.AddUint64(&turn, 1)-1)%uint64(len(bodies))]
				req, err := http.NewRequest("POST", *url, bytes.NewReader(body))
				if err != nil {
					panic(err)
				}
				req.Header.Set("Content-Type", "application/octet-stream")
				if *token != "" {
					req.Header.Set("Authorization", "Bearer "+*token)
				}
				resp, err := client.Do(req)
				ok := false
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusCreated
				}
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue
				}
				mu.Lock()
				if ok {
					lat = append(lat, float64(t1.Sub(t0).Microseconds())/1000)
				} else {
					errors++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Float64s(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return lat[i]
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"uploads": len(lat), "errors": errors, "per_second": float64(len(lat)) / dur.Seconds(),
		"p50_ms": pct(0.50), "p99_ms": pct(0.99),
	})
}
