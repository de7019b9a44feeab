// netclient runs the network steps named on its command line, in order, and prints one line
// per step: what tether exec tests compare between the target and this machine.
//
//	http URL              GET URL: "http STATUS BODY"
//	udp HOST:PORT MSG     one datagram and its answer: "udp REPLY"
//	lookup NAME           Go's resolver: "lookup NAME ADDR..." (sorted) or "lookup NAME error"
//	env NAME              "env NAME=VALUE" or "env NAME unset"
//	dial HOST:PORT        "dial ok" or "dial error: CLASS" (refused, unreachable, timeout, other)
//	loopback              a listener on 127.0.0.1 and a connection to it: "loopback ok"
//	rcvbuf HOST:PORT N    SO_RCVBUF set to N before connect, read after: "rcvbuf SAME" or the value
//	blocking HOST:PORT    a blocking connect (raw syscalls), then a GET: "blocking STATUS-LINE"
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	for len(args) > 0 {
		n := 1
		switch args[0] {
		case "http":
			n = 2
			step(doHTTP(args[1]))
		case "udp":
			n = 3
			step(doUDP(args[1], args[2]))
		case "lookup":
			n = 2
			step(doLookup(args[1]))
		case "env":
			n = 2
			if v, ok := os.LookupEnv(args[1]); ok {
				step("env " + args[1] + "=" + v)
			} else {
				step("env " + args[1] + " unset")
			}
		case "dial":
			n = 2
			step(doDial(args[1]))
		case "loopback":
			step(doLoopback())
		case "rcvbuf":
			n = 3
			step(doRcvbuf(args[1], args[2]))
		case "blocking":
			n = 2
			step(doBlocking(args[1]))
		default:
			fmt.Fprintln(os.Stderr, "netclient: unknown step", args[0])
			os.Exit(2)
		}
		args = args[n:]
	}
}

func step(line string) { fmt.Println(line) }

func doHTTP(url string) string {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(url)
	if err != nil {
		return "http error: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("http %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

func doUDP(addr, msg string) string {
	conn, err := net.DialTimeout("udp", addr, 3*time.Second)
	if err != nil {
		return "udp error: " + err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "udp error: " + err.Error()
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return "udp error: " + err.Error()
	}
	return "udp " + string(buf[:n])
}

func doLookup(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return "lookup " + name + " error"
	}
	sort.Strings(addrs)
	return "lookup " + name + " " + strings.Join(addrs, " ")
}

func errClass(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other (" + err.Error() + ")"
}

func doDial(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "dial error: " + errClass(err)
	}
	conn.Close()
	return "dial ok"
}

func doLoopback() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "loopback error: " + err.Error()
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("local"))
			c.Close()
		}
	}()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
	if err != nil {
		return "loopback error: " + err.Error()
	}
	defer conn.Close()
	b, _ := io.ReadAll(conn)
	if string(b) != "local" {
		return "loopback got " + string(b)
	}
	return "loopback ok"
}

func doRcvbuf(addr, size string) string {
	want, _ := strconv.Atoi(size)
	d := net.Dialer{Timeout: 3 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, want)
		})
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "rcvbuf error: " + err.Error()
	}
	defer conn.Close()
	raw, _ := conn.(*net.TCPConn).SyscallConn()
	var got int
	raw.Control(func(fd uintptr) {
		got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	if got == 2*want {
		return "rcvbuf SAME"
	}
	return fmt.Sprintf("rcvbuf %d (set %d)", got, want)
}

func doBlocking(addr string) string {
	tcp, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return "blocking error: " + err.Error()
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return "blocking error: " + err.Error()
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{Port: tcp.Port}
	copy(sa.Addr[:], tcp.IP.To4())
	if err := syscall.Connect(fd, sa); err != nil {
		return "blocking error: " + errClass(err)
	}
	req := "GET / HTTP/1.0\r\nHost: x\r\n\r\n"
	if _, err := syscall.Write(fd, []byte(req)); err != nil {
		return "blocking error: " + err.Error()
	}
	buf := make([]byte, 4096)
	n, _ := syscall.Read(fd, buf)
	return "blocking " + strings.SplitN(string(buf[:n]), "\r\n", 2)[0]
}
