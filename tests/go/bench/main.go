// Command bench times a loop of system calls made the way Go code makes them, for
// bench/go_syscall_cost.py. It times the loop alone (not process start-up) and prints one
// line, "ns/op <float>": wall-clock time (time.Now) per call.
//
//	bench read N        N 1-byte reads from /dev/zero with syscall.Read
//	                    (syscall.Syscall: entersyscall, the funnel, exitsyscall)
//	bench getppid N     N syscall.Syscall(SYS_GETPPID, 0, 0, 0)
//	bench rawgetppid N  N syscall.RawSyscall(SYS_GETPPID, 0, 0, 0) (the funnel, no entersyscall)
//
// A warm-up of N/10 calls (at most 10000) runs first, untimed. With a third argument,
// "wait", it then prints "ready" and waits for a line on stdin before the timed loop (for
// bench/attach.py, which attaches and detaches meanwhile).
// It imports net, so a cgo-enabled build links libc dynamically and can take LD_PRELOAD.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

var _ = net.IPv4len // links libc through the net package in cgo builds

func main() {
	if len(os.Args) != 3 && (len(os.Args) != 4 || os.Args[3] != "wait") {
		fail("usage: bench read|getppid|rawgetppid N [wait]")
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n <= 0 {
		fail("N must be a positive integer")
	}
	var loop func(int)
	switch os.Args[1] {
	case "read":
		fd, err := syscall.Open("/dev/zero", syscall.O_RDONLY, 0)
		if err != nil {
			fail("open /dev/zero: " + err.Error())
		}
		buf := make([]byte, 1)
		loop = func(n int) {
			for i := 0; i < n; i++ {
				if k, err := syscall.Read(fd, buf); k != 1 || err != nil {
					fail(fmt.Sprint("read: ", k, err))
				}
			}
		}
	case "getppid":
		loop = func(n int) {
			for i := 0; i < n; i++ {
				if _, _, errno := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0); errno != 0 {
					fail("getppid: " + errno.Error())
				}
			}
		}
	case "rawgetppid":
		loop = func(n int) {
			for i := 0; i < n; i++ {
				if _, _, errno := syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0); errno != 0 {
					fail("getppid: " + errno.Error())
				}
			}
		}
	default:
		fail("unknown workload " + os.Args[1])
	}
	warm := n / 10
	if warm > 10000 {
		warm = 10000
	}
	loop(warm)
	if len(os.Args) == 4 {
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fail("waiting for a line on stdin: " + err.Error())
		}
	}
	start := time.Now()
	loop(n)
	elapsed := time.Since(start)
	fmt.Printf("ns/op %.2f\n", float64(elapsed.Nanoseconds())/float64(n))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	os.Exit(2)
}
