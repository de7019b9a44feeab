// Command hooks checks the edges of tether's Go hooks: results that need all 64 bits, the
// scheduler while a hooked call blocks, and the runtime under load while every syscall takes
// the hooked path. Output is fixed text (no addresses, pids or times) unless stated.
//
//	hooks getppid     print getppid() made through syscall.Syscall (the funnel)
//	hooks seek DIR    lseek and pread 5 GiB into a sparse file in DIR: offsets above 4 GiB
//	hooks mmap        map 1 MiB anonymous memory: prints whether its address is above 4 GiB
//	hooks blocked     GOMAXPROCS=1: one goroutine sits in a raw getppid (made slow by the
//	                  test's handler) while a ticker goroutine counts ticks; prints the count
//	hooks stress SEC  1000 goroutines doing mixed syscalls, with GC and preemption, for SEC
//	                  seconds; prints "stress ok"
//
// It imports net, so a cgo-enabled build links libc dynamically.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

var _ = net.IPv4len // links libc through the net package in cgo builds

func main() {
	if len(os.Args) < 2 {
		fail("usage: hooks getppid|seek DIR|mmap|blocked|stress SEC")
	}
	switch os.Args[1] {
	case "getppid":
		r1, _, errno := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0)
		if errno != 0 {
			fail("getppid: " + errno.Error())
		}
		fmt.Println("getppid", r1)
	case "seek":
		seek(os.Args[2])
	case "mmap":
		mem, err := syscall.Mmap(-1, 0, 1<<20, syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_ANON|syscall.MAP_PRIVATE)
		check("mmap", err)
		mem[len(mem)-1] = 1
		fmt.Println("mmap above 4 GiB:", uintptr(unsafe.Pointer(&mem[0]))>>32 != 0)
		check("munmap", syscall.Munmap(mem))
	case "blocked":
		blocked()
	case "stress":
		sec, err := strconv.Atoi(os.Args[2])
		check("seconds", err)
		stress(time.Duration(sec) * time.Second)
	default:
		fail("unknown subcommand " + os.Args[1])
	}
}

func seek(dir string) {
	const far = 5<<30 + 123
	f, err := os.Create(filepath.Join(dir, "sparse"))
	check("create", err)
	defer f.Close()
	_, err = f.WriteAt([]byte("end"), far)
	check("write", err)
	off, err := f.Seek(far, 0)
	check("seek", err)
	buf := make([]byte, 3)
	n, err := f.ReadAt(buf, far)
	check("pread", err)
	st, err := f.Stat()
	check("stat", err)
	fmt.Println("seek", off, "pread", n, string(buf[:n]), "size", st.Size())
}

// blocked runs with one P: a goroutine makes a raw getppid, which the test's handler holds
// for 2 s; meanwhile a ticker goroutine must keep ticking.
func blocked() {
	runtime.GOMAXPROCS(1)
	var ticks int64
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				atomic.AddInt64(&ticks, 1)
			case <-stop:
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the ticker is running
	before := atomic.LoadInt64(&ticks)
	syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	during := atomic.LoadInt64(&ticks) - before
	close(stop)
	fmt.Println("ticks while blocked:", during)
}

func stress(d time.Duration) {
	dir, err := os.MkdirTemp("", "hooks-stress")
	check("mkdtemp", err)
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check("listen", err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { buf := make([]byte, 64); n, _ := c.Read(buf); c.Write(buf[:n]); c.Close() }()
		}
	}()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	var failures int64
	var first atomic.Value // the first failure, so that a red run says what went wrong
	failed := func(what string, err error) {
		if atomic.AddInt64(&failures, 1) == 1 {
			first.Store(fmt.Sprintf("%s: %v", what, err))
		}
	}
	for g := 0; g < 1000; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			path := filepath.Join(dir, strconv.Itoa(g))
			for i := 0; time.Now().Before(end); i++ {
				if err := os.WriteFile(path, []byte(path), 0o600); err != nil {
					failed("write", err)
				}
				if b, err := os.ReadFile(path); err != nil || string(b) != path {
					failed("read", fmt.Errorf("%v (%q)", err, b))
				}
				if g%10 == 0 {
					// 100 goroutines dial one accept loop: on a loaded machine a SYN that
					// finds the accept queue full is retried after 1 s, 3 s, ...; the
					// bound is for hangs, not for speed.
					c, err := net.DialTimeout("tcp", ln.Addr().String(), 30*time.Second)
					if err != nil {
						failed("dial", err)
						continue
					}
					c.Write([]byte("ping"))
					buf := make([]byte, 4)
					if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
						failed("echo", fmt.Errorf("%v (%q)", err, buf))
					}
					c.Close()
				}
				if i%50 == 0 {
					runtime.GC()
				}
				grow(64) // stack growth while syscalls are hooked
			}
		}(g)
	}
	wg.Wait()
	if failures != 0 {
		fail(fmt.Sprintf("stress: %d failures, the first: %s", failures, first.Load()))
	}
	fmt.Println("stress ok")
}

func grow(n int) byte {
	var pad [512]byte
	pad[n%512] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return grow(n-1) + pad[n%512]
}

func check(what string, err error) {
	if err != nil {
		fail(what + ": " + err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "hooks:", msg)
	os.Exit(1)
}
