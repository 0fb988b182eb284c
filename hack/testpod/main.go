// Command testpod is the tests' workload: no image can be pulled on the test
// machines, so the harnesses build this one static program into an image
// (imagebuild.BuildProgram), and its first argument says what it does.
//
//	testpod memhog       touch memory 1 MiB at a time until the OOM killer
//	                     ends it; first it reads stdin to a newline or its
//	                     end, so that a test holding stdin picks the moment
//	testpod write FILE   write and fsync FILE once a second, printing a
//	                     count after each: a pod whose disk stops is seen in
//	                     its log and the file's mtime
package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: testpod memhog | write FILE")
	}
	switch os.Args[1] {
	case "memhog":
		memhog()
	case "write":
		if len(os.Args) != 3 {
			fail("usage: testpod write FILE")
		}
		write(os.Args[2])
	default:
		fail("testpod: unknown mode " + os.Args[1])
	}
}

func memhog() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		keep = append(keep, b)
	}
}

func write(path string) {
	for n := 1; ; n++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err == nil {
			_, err = fmt.Fprintf(f, "%d %s\n", n, time.Now().Format(time.RFC3339Nano))
			if serr := f.Sync(); err == nil {
				err = serr
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "write %d: %v\n", n, err)
		} else {
			fmt.Printf("wrote %d\n", n)
		}
		time.Sleep(time.Second)
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}
