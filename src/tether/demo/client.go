// The demo's client: what it prints is what `tether demo` narrates.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	url := os.Args[1]
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Println("get error:", err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("get %d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	fmt.Printf("env %s\n", os.Getenv("DEMO_GREETING"))
	host := strings.Split(strings.TrimPrefix(url, "http://"), "/")[0]
	var took []time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			fmt.Println("dial error:", err)
			os.Exit(1)
		}
		took = append(took, time.Since(start))
		conn.Close()
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	fmt.Printf("connect_p50_us %.0f\n", float64(took[len(took)/2].Microseconds()))
}
