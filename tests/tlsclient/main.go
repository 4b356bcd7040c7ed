// A stock Go net/http client for the TLS specs (tests/e2e/server_tls_spec.lua): verifies the
// server with -ca, optionally presents -cert/-key, sends requests and prints, per response, the
// protocol, status and the server certificate's common name. Standard library only.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := flag.String("url", "", "the URL to request")
	ca := flag.String("ca", "", "PEM file of the CAs that verify the server")
	cert := flag.String("cert", "", "PEM client certificate")
	key := flag.String("key", "", "PEM client key")
	method := flag.String("method", "GET", "request method")
	body := flag.String("body", "", "file to send as the body")
	waitFile := flag.String("wait-file", "", "after the first request, wait for this file, then request again on the same client")
	flag.Parse()

	cfg := &tls.Config{}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail(fmt.Errorf("no certificates in %s", *ca))
		}
		cfg.RootCAs = pool
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fail(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	// A clone of the default transport keeps ForceAttemptHTTP2: HTTP/2 by ALPN, as stock clients do.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}

	do := func() {
		var payload []byte
		if *body != "" {
			var err error
			if payload, err = os.ReadFile(*body); err != nil {
				fail(err)
			}
		}
		req, err := http.NewRequest(*method, *url, bytes.NewReader(payload))
		if err != nil {
			fail(err)
		}
		res, err := client.Do(req)
		if err != nil {
			fail(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cn := ""
		if res.TLS != nil && len(res.TLS.PeerCertificates) > 0 {
			cn = res.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Printf("proto=%s status=%d cn=%s bytes=%d\n", res.Proto, res.StatusCode, cn, len(got))
	}
	do()
	if *waitFile != "" {
		for {
			if _, err := os.Stat(*waitFile); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		do()
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsclient:", err)
	os.Exit(1)
}
