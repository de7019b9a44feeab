// incoming is both sides of tether exec's incoming-traffic tests: an HTTP server (as the
// target's app, or as the program under tether) and an HTTP load client.
//
//	serve ADDR NAME                 net/http on ADDR; prints "listening ADDR" (the listener's
//	                                Addr) and "served N" (requests answered) on SIGUSR1, and on
//	                                SIGTERM before it exits
//	                                GET /       "NAME\n"
//	                                GET /addr   "NAME local=ADDR remote=ADDR\n"
//	                                GET /upgrade with Upgrade: echo  101, then each line
//	                                            the client sends back as "NAME LINE"
//	load URL CONNS SECONDS MODE [RATE [HEADER]]
//	                                CONNS clients GET URL for SECONDS, MODE keepalive (one
//	                                connection each) or new (a connection per request), as fast
//	                                as they can or RATE requests a second in all (0: as fast),
//	                                each with HEADER ("Name: value") if given; prints "load
//	                                REQUESTS ERRORS SECONDS P50_US P99_US" (latencies) and the
//	                                first error if any
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func serve(addr, name string) {
	var served int64
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&served, 1)
		io.WriteString(w, name+"\n")
	})
	mux.HandleFunc("/addr", func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&served, 1)
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "%s local=%s remote=%s\n", name, local, r.RemoteAddr)
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&served, 1)
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "Upgrade: echo only", http.StatusUpgradeRequired)
			return
		}
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			rw.WriteString(name + " " + line)
			rw.Flush()
		}
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen error:", err)
		os.Exit(1)
	}
	fmt.Println("listening", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	go func() {
		for sig := range stop {
			fmt.Println("served", atomic.LoadInt64(&served))
			if sig != syscall.SIGUSR1 {
				os.Exit(0)
			}
		}
	}()
	http.Serve(ln, mux)
}

func load(url string, conns int, seconds float64, mode string, rate float64, header string) {
	headerName, headerValue, _ := strings.Cut(header, ": ")
	transport := &http.Transport{MaxIdleConnsPerHost: conns, DisableKeepAlives: mode == "new",
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds*float64(time.Second)))
	defer cancel()
	var requests, errors int64
	var first atomic.Value
	var wg sync.WaitGroup
	var mu sync.Mutex
	var latencies []time.Duration
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var mine []time.Duration
			defer func() { mu.Lock(); latencies = append(latencies, mine...); mu.Unlock() }()
			interval := time.Duration(0)
			if rate > 0 {
				interval = time.Duration(float64(conns) / rate * float64(time.Second))
			}
			next := start.Add(interval * time.Duration(i) / time.Duration(conns))
			for ctx.Err() == nil {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				began := time.Now()
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				if header != "" {
					req.Header.Set(headerName, headerValue)
				}
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if ctx.Err() != nil {
					return // cut short by the end of the run: not counted
				}
				if err != nil {
					atomic.AddInt64(&errors, 1)
					first.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				atomic.AddInt64(&requests, 1)
				mine = append(mine, time.Since(began))
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	p50, p99 := time.Duration(0), time.Duration(0)
	if n := len(latencies); n > 0 {
		p50, p99 = latencies[n/2], latencies[n*99/100]
	}
	fmt.Printf("load %d %d %.3f %d %d\n", requests, errors, elapsed, p50.Microseconds(), p99.Microseconds())
	if e := first.Load(); e != nil {
		fmt.Println("first error:", e)
	}
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 3 && args[0] == "serve":
		serve(args[1], args[2])
	case len(args) >= 5 && len(args) <= 7 && args[0] == "load":
		conns, err1 := strconv.Atoi(args[2])
		seconds, err2 := strconv.ParseFloat(args[3], 64)
		rate, err3 := 0.0, error(nil)
		if len(args) >= 6 {
			rate, err3 = strconv.ParseFloat(args[5], 64)
		}
		header := ""
		if len(args) == 7 {
			header = args[6]
		}
		if err1 != nil || err2 != nil || err3 != nil {
			fmt.Println("load URL CONNS SECONDS keepalive|new [RATE [HEADER]]")
			os.Exit(2)
		}
		load(args[1], conns, seconds, args[4], rate, header)
	default:
		fmt.Println("usage: incoming serve ADDR NAME | load URL CONNS SECONDS keepalive|new [RATE]")
		os.Exit(2)
	}
}
