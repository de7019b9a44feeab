// files: file calls as a service makes them, one per command line argument group, for tests
// of the target's files: cat PATH, stat PATH, lstat PATH, readlink PATH, readdir PATH,
// walk PATH (files and bytes under it), write PATH TEXT, mkdirall PATH, remove PATH,
// serve-config PATH (an HTTP server as the JSON file at PATH says: listen, from).
// Each prints one line; a failure prints "error: " and the errno's text.
// For bench/files.py, timed in the program (not its start-up), "ns=N" each:
// time-read PATH (the whole file, 1 MiB reads), time-tcp HOST:PORT (the same reads of a TCP
// stream to its end), time-stat PATH (the median of 2000
// stats), time-walk PATH (filepath.WalkDir with an Info per file).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net" // also links libc with cgo on: the default build is dynamic, as most services are
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func timed(cmd, path string) string {
	start := time.Now()
	switch cmd {
	case "time-read", "time-tcp":
		var f io.ReadCloser
		var err error
		if cmd == "time-read" {
			f, err = os.Open(path)
		} else {
			f, err = net.Dial("tcp", path)
		}
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for {
			n, err := f.Read(buf)
			if n == 0 || err != nil {
				break
			}
		}
	case "time-stat":
		samples := make([]int64, 2000)
		for i := range samples {
			t := time.Now()
			if _, err := os.Stat(path); err != nil {
				return errText(err)
			}
			samples[i] = int64(time.Since(t))
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
		return fmt.Sprintf("ns=%d", samples[len(samples)/2])
	case "time-walk":
		if r := run("walk", path, nil); strings.HasPrefix(r, "error") {
			return r
		}
	}
	return fmt.Sprintf("ns=%d", int64(time.Since(start)))
}

func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "error: " + errno.Error()
	}
	return "error: " + err.Error()
}

func run(cmd, path string, rest []string) string {
	switch cmd {
	case "cat":
		b, err := os.ReadFile(path)
		if err != nil {
			return errText(err)
		}
		return strings.TrimRight(string(b), "\n")
	case "stat", "lstat":
		st, err := os.Stat(path)
		if cmd == "lstat" {
			st, err = os.Lstat(path)
		}
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("size=%d mode=%s", st.Size(), st.Mode())
	case "readlink":
		target, err := os.Readlink(path)
		if err != nil {
			return errText(err)
		}
		return target
	case "readdir":
		entries, err := os.ReadDir(path)
		if err != nil {
			return errText(err)
		}
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		return strings.Join(names, " ")
	case "walk":
		files, bytes := 0, int64(0)
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				info, err := d.Info()
				if err != nil {
					return err
				}
				files++
				bytes += info.Size()
			}
			return nil
		})
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("files=%d bytes=%d", files, bytes)
	case "write":
		if err := os.WriteFile(path, []byte(rest[0]), 0o644); err != nil {
			return errText(err)
		}
		return "written"
	case "time-read", "time-tcp", "time-stat", "time-walk":
		return timed(cmd, path)
	case "mkdirall":
		if err := os.MkdirAll(path, 0o755); err != nil {
			return errText(err)
		}
		return "made"
	case "serve-config":
		return serveConfig(path)
	case "remove":
		if err := os.Remove(path); err != nil {
			return errText(err)
		}
		return "removed"
	}
	return "unknown command " + cmd
}

// serveConfig serves HTTP as a service configured by the file at path would: it listens where
// the file's "listen" says and answers every request with its "from". Returns only on failure.
func serveConfig(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return errText(err)
	}
	var cfg struct{ Listen, From string }
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "error: " + err.Error()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errText(err)
	}
	fmt.Println("serving", ln.Addr())
	return errText(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, cfg.From)
	})))
}

func main() {
	args := os.Args[1:]
	for len(args) >= 2 {
		n := 2
		if args[0] == "write" {
			n = 3
		}
		fmt.Println(run(args[0], args[1], args[2:n]))
		args = args[n:]
	}
}
