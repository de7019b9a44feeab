// Command tracering makes a known set of syscalls from many threads at once, for the trace
// ring's tests: every one of them must reach `tether trace`, none twice.
//
//	tracering THREADS N   THREADS goroutines, each locked to its own OS thread, each making N
//	                      getppid calls through syscall.Syscall with the arguments
//	                      (0x7e7e, thread, i) for i = 0..N-1; prints "tracering ok"
//
// It imports net, so a cgo-enabled build links libc dynamically.
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

var _ = net.IPv4len // links libc through the net package in cgo builds

const marker = 0x7e7e // tells the test's calls from the runtime's own

func main() {
	if len(os.Args) != 3 {
		fail("usage: tracering THREADS N")
	}
	threads, err1 := strconv.Atoi(os.Args[1])
	n, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || threads <= 0 || n <= 0 {
		fail("THREADS and N must be positive integers")
	}
	var start, done sync.WaitGroup
	start.Add(1)
	for t := 0; t < threads; t++ {
		done.Add(1)
		go func(t int) {
			defer done.Done()
			runtime.LockOSThread() // one producer per thread, all writing at once
			start.Wait()
			for i := 0; i < n; i++ {
				if _, _, errno := syscall.Syscall(syscall.SYS_GETPPID, marker, uintptr(t), uintptr(i)); errno != 0 {
					fail("getppid: " + errno.Error())
				}
			}
		}(t)
	}
	start.Done()
	done.Wait()
	fmt.Println("tracering ok")
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "tracering:", msg)
	os.Exit(2)
}
