// goserver: the Go reference for bench/server. It does what the original autopgo server does on
// upload, on the same stack: net/http, github.com/google/pprof/profile.Parse of the body, then
// Profile.Write into {data}/{app}/staging/{unix-nanos} through a temporary file and a rename (what
// gocloud.dev's fileblob does, without fsync), answering 201 {"key": ...}. No event is published.
//
//	goserver -addr 127.0.0.1:8080 -data DIR
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

type apiError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func respond(w http.ResponseWriter, code int, body interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

func validApp(app string) bool {
	if app == "" {
		return false
	}
	for _, r := range app {
		if !(r == '-' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	data := flag.String("data", "goserver-data", "data directory")
	flag.Parse()

	http.HandleFunc("/api/profile/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			respond(w, http.StatusMethodNotAllowed, apiError{"method not allowed", 405})
			return
		}
		app := strings.TrimPrefix(r.URL.Path, "/api/profile/")
		if !validApp(app) {
			respond(w, http.StatusBadRequest, apiError{"invalid app name", 400})
			return
		}
		p, err := profile.Parse(r.Body)
		if err != nil {
			respond(w, http.StatusBadRequest, apiError{err.Error(), 400})
			return
		}
		key := filepath.Join(app, "staging", strconv.FormatInt(time.Now().UnixNano(), 10))
		dir := filepath.Join(*data, app, "staging")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			respond(w, http.StatusInternalServerError, apiError{err.Error(), 500})
			return
		}
		f, err := os.CreateTemp(dir, ".tmp-")
		if err != nil {
			respond(w, http.StatusInternalServerError, apiError{err.Error(), 500})
			return
		}
		if err := p.Write(f); err != nil {
			f.Close()
			os.Remove(f.Name())
			respond(w, http.StatusInternalServerError, apiError{err.Error(), 500})
			return
		}
		if err := f.Close(); err != nil {
			os.Remove(f.Name())
			respond(w, http.StatusInternalServerError, apiError{err.Error(), 500})
			return
		}
		if err := os.Rename(f.Name(), filepath.Join(*data, key)); err != nil {
			respond(w, http.StatusInternalServerError, apiError{err.Error(), 500})
			return
		}
		respond(w, http.StatusCreated, map[string]string{"key": key})
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
