// netclient runs the network steps named on its command line, in order, and prints one line
// per step: what tether exec tests compare between the target and this machine.
//
//	http URL              GET URL: "http STATUS BODY"
//	udp HOST:PORT MSG     one datagram and its answer: "udp REPLY"
//	lookup NAME           Go's resolver: "lookup NAME ADDR..." (sorted) or "lookup NAME error"
//	env NAME              "env NAME=VALUE" or "env NAME unset"
//	dial HOST:PORT        "dial ok peer=ADDR" or "dial error: CLASS" (refused, unreachable, timeout, other)
//	loopback              a listener on 127.0.0.1 and a connection to it: "loopback ok"
//	rcvbuf HOST:PORT N    SO_RCVBUF set to N before connect, read after: "rcvbuf SAME" or the value
//	blocking HOST:PORT    a blocking connect (raw syscalls), then a GET: "blocking STATUS-LINE"
//	wait PATH             until PATH exists (at most 10 s): "wait ok" or "wait timeout"
//	udpto HOST:PORT MSG   an unconnected UDP socket: WriteTo, then WriteMsgUDP (sendmsg), each
//	                      answer read with ReadFrom: "udpto REPLY REPLY from ADDR"
//	exit N                exit with status N
//	sink ADDR             accept one connection, read it to the end, answer with the sha256 (hex)
//	acceptor ADDR         accept connections and close them, until killed (the far end for
//	                      connects measured without tether)
//	echoer ADDR           accept connections and echo each one's bytes, until killed
//	send ADDR BYTES       send BYTES of data, check the sink's sha256: "send ok BYTES SECONDS"
//	connects ADDR N       N connects one after the other: "connects p50_us P50"
//	paced ADDR N MS       the same with MS milliseconds between connects (a program that
//	                      connects now and then, not in a tight loop)
//	pings ADDR N MS       one connection, N one-byte round trips to an echoer, MS ms apart
//	                      (the round trip of the link itself): "pings p50_us P50"
//	lookups NAME N        N lookups one after the other: "lookups p50_us P50"
//	pairs ADDR N          N request/response pairs on one unconnected UDP socket (WriteTo,
//	                      ReadFrom; a reply not back within 1 s is lost): "pairs lost L p50_us P50"
//	within ADDR MS        a dial whose deadline is MS ms away, and one cancelled after MS ms:
//	                      "within CLASS CLASS" (ok, timeout, canceled, ...), or "late" with the
//	                      milliseconds a dial took past its MS (500 ms of slack)
//	udpdup HOST:PORT MSG  a connected UDP socket's File() made a net.Conn again (two dups; FileConn
//	                      asks the socket's type and family), a datagram sent and answered
//	                      through it: "udpdup TYPE REPLY"
//	uring                 io_uring_setup by number (syscall.Syscall): "uring ok" or "uring ERRNO"
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"unsafe"
)

// steps: how many arguments each takes, and what it does with them.
var steps = map[string]struct {
	args int
	run  func(a []string) string
}{
	"http":     {1, func(a []string) string { return doHTTP(a[0]) }},
	"udp":      {2, func(a []string) string { return doUDP(a[0], a[1]) }},
	"lookup":   {1, func(a []string) string { return doLookup(a[0]) }},
	"env":      {1, func(a []string) string { return doEnv(a[0]) }},
	"dial":     {1, func(a []string) string { return doDial(a[0]) }},
	"loopback": {0, func(a []string) string { return doLoopback() }},
	"rcvbuf":   {2, func(a []string) string { return doRcvbuf(a[0], a[1]) }},
	"blocking": {1, func(a []string) string { return doBlocking(a[0]) }},
	"wait":     {1, func(a []string) string { return doWait(a[0]) }},
	"udpto":    {2, func(a []string) string { return doUDPTo(a[0], a[1]) }},
	"sink":     {1, func(a []string) string { return doSink(a[0]) }},
	"send":     {2, func(a []string) string { return doSend(a[0], a[1]) }},
	"acceptor": {1, func(a []string) string { return serve("acceptor", a[0], func(c net.Conn) { c.Close() }) }},
	"connects": {2, func(a []string) string { return doConnects(a[0], a[1], 0) }},
	"paced": {3, func(a []string) string {
		gap, _ := strconv.Atoi(a[2])
		return doConnects(a[0], a[1], time.Duration(gap)*time.Millisecond)
	}},
	"echoer": {1, func(a []string) string {
		return serve("echoer", a[0], func(c net.Conn) {
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		})
	}},
	"pings":   {3, func(a []string) string { return doPings(a[0], a[1], a[2]) }},
	"lookups": {2, func(a []string) string { return doLookups(a[0], a[1]) }},
	"within":  {2, func(a []string) string { return doWithin(a[0], a[1]) }},
	"pairs":   {2, func(a []string) string { return doPairs(a[0], a[1]) }},
	"udpdup":  {2, func(a []string) string { return doUDPDup(a[0], a[1]) }},
	"uring":   {0, func(a []string) string { return doUring() }},
	"exit": {1, func(a []string) string {
		code, _ := strconv.Atoi(a[0])
		os.Exit(code)
		return ""
	}},
}

func main() {
	args := os.Args[1:]
	for len(args) > 0 {
		s, ok := steps[args[0]]
		if !ok || len(args) < 1+s.args {
			fmt.Fprintln(os.Stderr, "netclient: unknown step or missing arguments:", args[0])
			os.Exit(2)
		}
		step(s.run(args[1 : 1+s.args]))
		args = args[1+s.args:]
	}
}

func step(line string) { fmt.Println(line) }

func doEnv(name string) string {
	if v, ok := os.LookupEnv(name); ok {
		return "env " + name + "=" + v
	}
	return "env " + name + " unset"
}

func doUDPDup(addr, msg string) string {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return "udpdup error: " + err.Error()
	}
	defer conn.Close()
	f, err := conn.(*net.UDPConn).File()
	if err != nil {
		return "udpdup error: " + err.Error()
	}
	defer f.Close()
	again, err := net.FileConn(f)
	if err != nil {
		return "udpdup error: " + err.Error()
	}
	defer again.Close()
	reply, err := exchange(again, msg)
	if err != nil {
		return "udpdup error: " + err.Error()
	}
	return fmt.Sprintf("udpdup %T %s", again, reply)
}

// exchange sends msg as one datagram on conn and returns the answer (3 s for both).
func exchange(conn net.Conn, msg string) (string, error) {
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// doUring asks for an io_uring as programs that use one do, by number: Go's syscall package has
// no wrapper for it.
func doUring() string {
	const sysIoUringSetup = 425 // x86-64
	var params [120]byte        // struct io_uring_params
	fd, _, errno := syscall.Syscall(sysIoUringSetup, 4, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		return "uring " + errno.Error()
	}
	syscall.Close(int(fd))
	return "uring ok"
}

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
	reply, err := exchange(conn, msg)
	if err != nil {
		return "udp error: " + err.Error()
	}
	return "udp " + reply
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
	defer conn.Close()
	return "dial ok peer=" + conn.RemoteAddr().String()
}

func doWithin(addr, ms string) string {
	n, _ := strconv.Atoi(ms)
	limit := time.Duration(n) * time.Millisecond
	var classes []string
	for _, cancel := range []bool{false, true} {
		ctx, stop := context.WithTimeout(context.Background(), limit)
		if cancel {
			ctx, stop = context.WithCancel(context.Background())
			time.AfterFunc(limit, stop)
		}
		start := time.Now()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		took := time.Since(start)
		stop()
		switch {
		case took > limit+500*time.Millisecond:
			classes = append(classes, fmt.Sprintf("late %d", (took-limit).Milliseconds()))
		case err == nil:
			conn.Close()
			classes = append(classes, "ok")
		case errors.Is(err, context.Canceled):
			classes = append(classes, "canceled")
		default:
			classes = append(classes, errClass(err))
		}
	}
	return "within " + strings.Join(classes, " ")
}

func doWait(path string) string {
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return "wait ok"
		}
	}
	return "wait timeout"
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

func doSink(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "sink error: " + err.Error()
	}
	defer ln.Close()
	fmt.Println("sink listening") // the caller waits for this line
	conn, err := ln.Accept()
	if err != nil {
		return "sink error: " + err.Error()
	}
	defer conn.Close()
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil {
		return "sink error: " + err.Error()
	}
	conn.Write([]byte(hex.EncodeToString(h.Sum(nil))))
	return fmt.Sprintf("sink %d", n)
}

// serve listens at addr and hands each connection to handle, until killed; "NAME listening"
// once it listens.
func serve(name, addr string, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return name + " error: " + err.Error()
	}
	fmt.Println(name + " listening") // the caller waits for this line
	for {
		conn, err := ln.Accept()
		if err != nil {
			return name + " error: " + err.Error()
		}
		handle(conn)
	}
}

func doPings(addr, count, ms string) string {
	n, _ := strconv.Atoi(count)
	gap, _ := strconv.Atoi(ms)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "pings error: " + err.Error()
	}
	defer conn.Close()
	one := []byte{'p'}
	samples := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		time.Sleep(time.Duration(gap) * time.Millisecond)
		start := time.Now()
		if _, err := conn.Write(one); err != nil {
			return "pings error: " + err.Error()
		}
		if _, err := io.ReadFull(conn, one); err != nil {
			return "pings error: " + err.Error()
		}
		samples = append(samples, time.Since(start))
	}
	return "pings p50_us " + p50(samples)
}

func doSend(addr, size string) string {
	total, _ := strconv.ParseInt(size, 10, 64)
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i*7 + i>>8)
	}
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "send error: " + err.Error()
	}
	defer conn.Close()
	h := sha256.New()
	for sent := int64(0); sent < total; {
		chunk := block
		if total-sent < int64(len(chunk)) {
			chunk = chunk[:total-sent]
		}
		if _, err := conn.Write(chunk); err != nil {
			return "send error: " + err.Error()
		}
		h.Write(chunk)
		sent += int64(len(chunk))
	}
	conn.(*net.TCPConn).CloseWrite()
	answer, _ := io.ReadAll(conn)
	elapsed := time.Since(start).Seconds()
	if string(answer) != hex.EncodeToString(h.Sum(nil)) {
		return "send error: sha256 differs"
	}
	return fmt.Sprintf("send ok %d %.6f", total, elapsed)
}

func p50(samples []time.Duration) string {
	if len(samples) == 0 {
		return "-"
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	return fmt.Sprintf("%.1f", float64(samples[len(samples)/2].Nanoseconds())/1000)
}

func doConnects(addr, count string, gap time.Duration) string {
	n, _ := strconv.Atoi(count)
	samples := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		time.Sleep(gap)
		start := time.Now()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return "connects error: " + err.Error()
		}
		samples = append(samples, time.Since(start))
		conn.Close()
	}
	return "connects p50_us " + p50(samples)
}

func doLookups(name, count string) string {
	n, _ := strconv.Atoi(count)
	samples := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := net.DefaultResolver.LookupHost(context.Background(), name); err != nil {
			return "lookups error: " + err.Error()
		}
		samples = append(samples, time.Since(start))
	}
	return "lookups p50_us " + p50(samples)
}

func doPairs(addr, count string) string {
	n, _ := strconv.Atoi(count)
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "pairs error: " + err.Error()
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return "pairs error: " + err.Error()
	}
	defer conn.Close()
	samples := make([]time.Duration, 0, n)
	buf := make([]byte, 2048)
	lost := 0
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("q%d", i)
		start := time.Now()
		if _, err := conn.WriteTo([]byte(msg), to); err != nil {
			return "pairs error: " + err.Error()
		}
		conn.SetReadDeadline(start.Add(time.Second))
		for {
			got, _, err := conn.ReadFrom(buf)
			if err != nil {
				lost++
				break
			}
			if strings.HasSuffix(string(buf[:got]), msg) { // not a late reply to an earlier one
				samples = append(samples, time.Since(start))
				break
			}
		}
	}
	return fmt.Sprintf("pairs lost %d p50_us %s", lost, p50(samples))
}

func doUDPTo(addr, msg string) string {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "udpto error: " + err.Error()
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return "udpto error: " + err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	var replies []string
	var from net.Addr
	for i, send := range []func() error{
		func() error { _, err := conn.WriteTo([]byte(msg), to); return err },
		func() error { _, _, err := conn.WriteMsgUDP([]byte(msg+"2"), nil, to); return err },
	} {
		if err := send(); err != nil {
			return fmt.Sprintf("udpto error (send %d): %v", i, err)
		}
		buf := make([]byte, 1500)
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Sprintf("udpto error (receive %d): %v", i, err)
		}
		replies, from = append(replies, string(buf[:n])), addr
	}
	return "udpto " + strings.Join(replies, " ") + " from " + from.String()
}
