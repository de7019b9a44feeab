// Command probe exercises a few families of system calls for tether's tests.
//
// Each subcommand does one thing and prints a fixed text, with no addresses, ports, pids
// or temporary names in it, so that the output of two runs (with and without tether's
// layer, or under two Go versions) can be compared byte for byte:
//
//	probe hello              print "hello"
//	probe exit N             exit with status N
//	probe tcp                echo 1 MiB through a TCP connection to itself on 127.0.0.1
//	probe udp                send a datagram to itself on 127.0.0.1 and get a reply
//	probe files [DIR]        create, write, read, stat, list, rename and remove files in a
//	                         fresh directory under DIR (default: os.TempDir())
//	probe exec               run itself as a child twice: `hello`, then `exit 253`
//	probe goroutines         start 1000 goroutines, wait for them, then runtime.GC()
//
// It imports net, so a cgo-enabled build links libc dynamically. Any failure prints
// "probe: ..." on stderr and exits 1.
package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// deadline bounds every network wait, so a broken syscall layer fails instead of hanging.
const deadline = 10 * time.Second

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "hello":
		fmt.Println("hello")
	case "exit":
		if len(args) != 1 {
			usage()
		}
		n, err := strconv.Atoi(args[0])
		check("exit status", err)
		os.Exit(n)
	case "tcp":
		tcp()
	case "udp":
		udp()
	case "files":
		dir := os.TempDir()
		if len(args) > 0 {
			dir = args[0]
		}
		files(dir)
	case "exec":
		execSelf()
	case "goroutines":
		goroutines()
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe hello|exit N|tcp|udp|files [DIR]|exec|goroutines")
	os.Exit(2)
}

// check ends the program with a message on stderr if err is not nil.
func check(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe: %s: %v\n", what, err)
		os.Exit(1)
	}
}

// tcp listens on an ephemeral loopback port, connects to itself and has the server echo
// 1 MiB back; the client writes and reads concurrently so both directions fill up.
func tcp() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check("listen", err)
	defer ln.Close()

	// Server: accept one connection and echo everything until the client closes its side.
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(deadline))
		_, err = io.Copy(conn, conn)
		served <- err
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	check("dial", err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(deadline))

	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite() // the server's io.Copy then ends
		}
		written <- err
	}()

	echoed, err := io.ReadAll(conn)
	check("read echo", err)
	check("write", <-written)
	check("server", <-served)
	if !bytes.Equal(echoed, payload) {
		check("echo", fmt.Errorf("got %d bytes back, they differ from the %d sent", len(echoed), len(payload)))
	}
	fmt.Printf("tcp: echoed %d bytes, sha256 %x\n", len(echoed), sha256.Sum256(echoed))
}

// udp sends "ping" from one loopback socket to another, which answers "pong".
func udp() {
	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	check("listen", err)
	defer server.Close()
	server.SetDeadline(time.Now().Add(deadline))

	served := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		n, from, err := server.ReadFrom(buf)
		if err == nil && string(buf[:n]) != "ping" {
			err = fmt.Errorf("server got %q", buf[:n])
		}
		if err == nil {
			_, err = server.WriteTo([]byte("pong"), from)
		}
		served <- err
	}()

	client, err := net.Dial("udp", server.LocalAddr().String())
	check("dial", err)
	defer client.Close()
	client.SetDeadline(time.Now().Add(deadline))
	_, err = client.Write([]byte("ping"))
	check("send", err)
	buf := make([]byte, 64)
	n, err := client.Read(buf)
	check("receive", err)
	check("server", <-served)
	fmt.Printf("udp: sent %q, got %q\n", "ping", buf[:n])
}

// files works in a fresh directory under base and removes it afterwards.
func files(base string) {
	dir, err := os.MkdirTemp(base, "probe-files-")
	check("mkdir temp", err)
	defer os.RemoveAll(dir)

	// Create and write two files and a subdirectory.
	contents := map[string]string{"a.txt": "alpha\n", "b.txt": "bravo bravo\n"}
	for _, name := range []string{"a.txt", "b.txt"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		check("create", err)
		check("chmod", f.Chmod(0o640)) // the mode above was masked by the umask
		_, err = f.WriteString(contents[name])
		check("write", err)
		check("sync", f.Sync())
		check("close", f.Close())
	}
	check("mkdir", os.Mkdir(filepath.Join(dir, "sub"), 0o750))

	// Read back, stat, then list the directory (os.ReadDir sorts by name).
	data, err := os.ReadFile(filepath.Join(dir, "b.txt"))
	check("read", err)
	fmt.Printf("files: read b.txt %q\n", data)
	info, err := os.Stat(filepath.Join(dir, "a.txt"))
	check("stat", err)
	fmt.Printf("files: stat a.txt size=%d mode=%v\n", info.Size(), info.Mode())
	list := func() {
		entries, err := os.ReadDir(dir)
		check("readdir", err)
		fmt.Print("files: readdir")
		for _, e := range entries {
			fmt.Printf(" %s(dir=%t)", e.Name(), e.IsDir())
		}
		fmt.Println()
	}
	list()

	// Append, rename into the subdirectory, remove, and list again.
	f, err := os.OpenFile(filepath.Join(dir, "a.txt"), os.O_APPEND|os.O_WRONLY, 0)
	check("open append", err)
	_, err = f.WriteString("more\n")
	check("append", err)
	check("close", f.Close())
	check("rename", os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub", "a.txt")))
	check("remove", os.Remove(filepath.Join(dir, "b.txt")))
	_, err = os.Stat(filepath.Join(dir, "b.txt"))
	if !errors.Is(err, os.ErrNotExist) {
		check("stat removed", fmt.Errorf("want not-exist, got %v", err))
	}
	data, err = os.ReadFile(filepath.Join(dir, "sub", "a.txt"))
	check("read renamed", err)
	fmt.Printf("files: read sub/a.txt %q\n", data)
	list()
}

// execSelf runs this same executable as a child: once to capture its output, once to see
// its exit status, that time with an environment of its own (which tether must keep the
// child hooked through).
func execSelf() {
	self, err := os.Executable()
	check("executable", err)

	out, err := exec.Command(self, "hello").Output()
	check("child hello", err)
	fmt.Printf("exec: child said %q\n", out)

	cmd := exec.Command(self, "exit", "253")
	cmd.Env = []string{"PROBE_CHILD=1"}
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		check("child exit", fmt.Errorf("want an exit status, got %v", err))
	}
	fmt.Printf("exec: child exit code %d\n", exitErr.ExitCode())
}

// goroutines starts 1000 goroutines that each sleep briefly (parking on the runtime's
// timers and futexes) and then send a number; it sums them and forces a collection.
func goroutines() {
	const n = 1000
	results := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			time.Sleep(time.Millisecond)
			results <- i * i
		}(i)
	}
	wg.Wait()
	close(results)
	sum := 0
	for r := range results {
		sum += r
	}
	runtime.GC()
	fmt.Printf("goroutines: %d finished, sum of squares %d\n", n, sum)
}
