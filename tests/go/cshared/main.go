// Package main builds, with -buildmode=c-shared, a library for tether's tests that a C
// program (tests/native/cshared_host.c) or Python's ctypes loads with dlopen.
//
// The Go runtime starts inside a process that it does not own, which is the case that
// matters: the exported function below makes system calls from Go code (pipe, write, read,
// close) on a goroutine as well as on the calling thread.
package main

import "C"

import (
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// TetherProbe writes n bytes into a pipe from a goroutine, reads them back on the calling
// thread and returns how many bytes went through in both directions: 2*n, so
// TetherProbe(21) == 42. It returns -1 on any error, or if n is negative.
//
//export TetherProbe
func TetherProbe(n C.int) C.int {
	if n < 0 {
		return -1
	}
	r, w, err := os.Pipe()
	if err != nil {
		return -1
	}
	defer r.Close()

	written := make(chan int, 1)
	go func() {
		defer w.Close()
		k, _ := w.Write(make([]byte, int(n)))
		written <- k
	}()

	data, err := io.ReadAll(r)
	if err != nil {
		return -1
	}
	return C.int(len(data) + <-written)
}

// TetherBlocked runs this library's runtime with one P: a goroutine makes a raw getppid
// (held for 2 s by the test's handler) while a ticker goroutine counts 50 ms ticks; it
// returns the ticks counted meanwhile (about 40; 0 if the P was held).
//
//export TetherBlocked
func TetherBlocked() C.int {
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
	return C.int(during)
}

func main() {}
