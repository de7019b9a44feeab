// ticker makes a getppid call through Go's syscall package every millisecond for SECONDS
// seconds, checks each answer, and prints "ticker ok N" with the count: a program that keeps
// making hooked calls while tether attaches to it and detaches again. It prints "ready" first.
package main

import (
	"fmt"
	_ "net" // so that a build with cgo links libc: the dynamic variant
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	seconds, err := strconv.ParseFloat(os.Args[1], 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: ticker SECONDS")
		os.Exit(2)
	}
	want := os.Getppid()
	fmt.Println("ready")
	n := 0
	for end := time.Now().Add(time.Duration(seconds * float64(time.Second))); time.Now().Before(end); n++ {
		if got, _, _ := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0); int(got) != want {
			fmt.Printf("getppid %d, not %d\n", got, want)
			os.Exit(1)
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("ticker ok %d\n", n)
}
