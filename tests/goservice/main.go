// A small Go HTTP service for the scraper's end-to-end tests: it serves net/http/pprof and keeps
// the CPU busy in a few named functions, so its CPU profiles name them. Built at test time with
// Go 1.23, whose profiles carry Function.start_line (what go build -pgo needs).
//
//	goservice -addr 127.0.0.1:0 -port-file /tmp/port
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"sort"
	"time"
)

var sink uint64

//go:noinline
func burnFibonacci(n int) int {
	if n < 2 {
		return n
	}
	return burnFibonacci(n-1) + burnFibonacci(n-2)
}

//go:noinline
func burnHashing(rounds int) [32]byte {
	sum := sha256.Sum256([]byte("autopgo"))
	for i := 0; i < rounds; i++ {
		sum = sha256.Sum256(sum[:])
	}
	return sum
}

//go:noinline
func burnSorting(n int) int {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = (i * 7919) % n
	}
	sort.Ints(xs)
	return xs[n/2]
}

// work keeps one core partly busy: bursts of the three functions (each about a millisecond, so
// that even a short profile samples all three), then a short sleep.
func work() {
	for {
		sink += uint64(burnFibonacci(25))
		h := burnHashing(4000)
		sink += uint64(h[0])
		sink += uint64(burnSorting(10000))
		time.Sleep(2 * time.Millisecond)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	portFile := flag.String("port-file", "", "write the bound port here once listening")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	go work()
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprint(port)), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal(http.Serve(ln, nil))
}
