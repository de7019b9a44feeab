// Command gohost is a Go program that loads a Go c-shared library (tests/go/cshared) with
// dlopen: two Go runtimes in one process, each with its own syscall entry to hook.
//
//	gohost LIB.so N        prints "host N" after a pipe round trip of N bytes made by its
//	                       own runtime, then "lib M" with M = TetherProbe(N) (2*N), made by
//	                       the library's runtime, both on goroutines; exit 1 on any error
//	gohost LIB.so blocked  GOMAXPROCS=1 in each runtime in turn: a raw getppid (held by the
//	                       test's handler) while a ticker counts; prints "host ticks: N",
//	                       then "lib ticks: M" (TetherBlocked)
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static void *lib_open(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static const char *lib_error(void) { const char *e = dlerror(); return e ? e : "unknown"; }
static int lib_probe(void *lib, int n)
{
	int (*probe)(int) = (int (*)(int))dlsym(lib, "TetherProbe");
	return probe ? probe(n) : -2;
}
static int lib_blocked(void *lib)
{
	int (*blocked)(void) = (int (*)(void))dlsym(lib, "TetherBlocked");
	return blocked ? blocked() : -2;
}
*/
import "C"

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func roundTrip(n int) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	go func() {
		defer w.Close()
		w.Write(make([]byte, n))
	}()
	data, err := io.ReadAll(r)
	return len(data), err
}

// blocked is TetherBlocked's twin in this runtime.
func blocked() int64 {
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
	return during
}

func open(path string) unsafe.Pointer {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	lib := C.lib_open(cpath)
	if lib == nil {
		fmt.Println("dlopen error:", C.GoString(C.lib_error()))
		os.Exit(1)
	}
	return lib
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gohost LIB.so N|blocked")
		os.Exit(2)
	}
	if os.Args[2] == "blocked" {
		fmt.Println("host ticks:", blocked())
		fmt.Println("lib ticks:", int(C.lib_blocked(open(os.Args[1]))))
		return
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gohost:", err)
		os.Exit(2)
	}
	got, err := roundTrip(n)
	if err != nil || got != n {
		fmt.Println("host error:", got, err)
		os.Exit(1)
	}
	fmt.Println("host", got)
	fmt.Println("lib", int(C.lib_probe(open(os.Args[1]), C.int(n))))
}
