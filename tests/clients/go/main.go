// writer: writes points to an InfluxDB 2.x compatible /api/v2/write endpoint
// with the official Go client (github.com/influxdata/influxdb-client-go/v2),
// half through the blocking write API and half through the non-blocking
// (batching) write API, and exits non-zero on any write error.
//
//	writer -url URL -token T -org O -bucket B -measurement M -count N -base NS
//
// Point i (0 <= i < N) is
//
//	M,api=<blocking|batching>,client=go i=<i>i,v=<i>.5 <base+i>
//
// (nanosecond precision): points 0 .. N/2-1 go through WriteAPIBlocking,
// points N/2 .. N-1 through WriteAPI (non-blocking), which is flushed and
// closed before the program ends. On success it prints N on stdout and exits
// 0. On any error it prints the error(s) on stderr and exits 1 (2 for bad
// usage).
//
// Errors of the non-blocking API are collected from its Errors() channel.
// That API also *hides* some failures: an HTTP error whose message contains
// "partial write", "unable to parse", "points beyond retention policy" or
// "hinted handoff queue not empty" is only logged as a warning by the client
// (never sent to the channel). A logger installed here turns those warnings
// into errors too. Retries of the non-blocking API are off by default
// (-max-retries 0): a 429/5xx/connection error is reported at once instead of
// being retried in the background.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	apihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/influxdata/influxdb-client-go/v2/api/write"
	clientlog "github.com/influxdata/influxdb-client-go/v2/log"
)

// errs collects every error seen, from any goroutine.
type errs struct {
	mu   sync.Mutex
	list []string
}

func (e *errs) add(format string, v ...interface{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, fmt.Sprintf(format, v...))
}

func (e *errs) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// captureLogger forwards the client's log to stderr (errors always, the rest
// by level) and records the write errors that the non-blocking API only logs.
type captureLogger struct {
	mu     sync.Mutex
	level  uint
	prefix string
	errs   *errs
}

func (l *captureLogger) print(tag, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(os.Stderr, "%s %s %s\n", l.prefix, tag, strings.TrimRight(msg, "\n"))
}
func (l *captureLogger) lvl() uint {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level
}
func (l *captureLogger) Debugf(f string, v ...interface{}) { l.Debug(fmt.Sprintf(f, v...)) }
func (l *captureLogger) Debug(msg string) {
	if l.lvl() >= clientlog.DebugLevel {
		l.print("D!", msg)
	}
}
func (l *captureLogger) Infof(f string, v ...interface{}) { l.Info(fmt.Sprintf(f, v...)) }
func (l *captureLogger) Info(msg string) {
	if l.lvl() >= clientlog.InfoLevel {
		l.print("I!", msg)
	}
}
func (l *captureLogger) Warnf(f string, v ...interface{}) { l.Warn(fmt.Sprintf(f, v...)) }
func (l *captureLogger) Warn(msg string) {
	// internal/write.Service.HandleWrite: "Write error: <msg>" for the errors it ignores
	if strings.HasPrefix(msg, "Write error:") {
		l.errs.add("non-blocking write (error ignored by the client): %s", msg)
		l.print("W!", msg)
		return
	}
	if l.lvl() >= clientlog.WarningLevel {
		l.print("W!", msg)
	}
}
func (l *captureLogger) Errorf(f string, v ...interface{}) { l.Error(fmt.Sprintf(f, v...)) }
func (l *captureLogger) Error(msg string)                  { l.print("E!", msg) }
func (l *captureLogger) SetLogLevel(level uint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.level = level
}
func (l *captureLogger) LogLevel() uint { return l.lvl() }
func (l *captureLogger) SetPrefix(p string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prefix = p
}

func point(measurement, api string, i int64, base int64) *write.Point {
	return influxdb2.NewPoint(measurement,
		map[string]string{"api": api, "client": "go"},
		map[string]interface{}{"i": i, "v": float64(i) + 0.5},
		time.Unix(0, base+i))
}

func main() {
	url := flag.String("url", "", "server URL, e.g. http://127.0.0.1:18097 (required)")
	token := flag.String("token", "", "API token (Authorization: Token ...); v1 style: user:password")
	org := flag.String("org", "", "organization (required)")
	bucket := flag.String("bucket", "", "bucket (required)")
	measurement := flag.String("measurement", "go_writer", "measurement name")
	count := flag.Int64("count", 10, "number of points (N)")
	base := flag.Int64("base", 0, "timestamp of point 0 in ns since the epoch (0: now)")
	batchSize := flag.Uint("batch-size", 1000, "points per request (both APIs)")
	maxRetries := flag.Uint("max-retries", 0, "retries of the non-blocking API on 429/5xx/connection errors")
	gzip := flag.Bool("gzip", false, "gzip request bodies")
	timeout := flag.Duration("timeout", 60*time.Second, "overall deadline")
	logLevel := flag.Uint("log-level", 0, "client log level: 0 error, 1 warning, 2 info, 3 debug")
	bad := flag.Bool("bad", false, "write one valid and one invalid line with the blocking API, print the HTTP status the client reports (or ok), and exit")
	flag.Parse()
	if *url == "" || *org == "" || *bucket == "" || *count < 0 || *batchSize == 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: writer -url URL -token T -org O -bucket B -measurement M -count N -base NS")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if *base == 0 {
		*base = time.Now().UnixNano()
	}

	var failures errs
	clientlog.Log = &captureLogger{prefix: "influxdb2client", errs: &failures}

	opts := influxdb2.DefaultOptions().
		SetBatchSize(*batchSize).
		SetFlushInterval(100). // ms; Flush() below sends the rest anyway
		SetMaxRetries(*maxRetries).
		SetUseGZip(*gzip).
		SetPrecision(time.Nanosecond).
		SetLogLevel(*logLevel)
	client := influxdb2.NewClientWithOptions(*url, *token, opts)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	if *bad {
		lines := []string{
			fmt.Sprintf("%s,api=bad,client=go v=1 %d", *measurement, *base),
			fmt.Sprintf("%s,api=bad,client=go v=1.1.1 %d", *measurement, *base+1),
		}
		err := client.WriteAPIBlocking(*org, *bucket).WriteRecord(ctx, lines...)
		client.Close()
		var status *apihttp.Error
		switch {
		case errors.As(err, &status):
			fmt.Println(status.StatusCode)
		case err != nil:
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		default:
			fmt.Println("ok")
		}
		return
	}

	nBlocking := *count / 2

	// ---- blocking API: points 0 .. nBlocking-1, batchSize per request
	blocking := client.WriteAPIBlocking(*org, *bucket)
	for start := int64(0); start < nBlocking; start += int64(*batchSize) {
		end := start + int64(*batchSize)
		if end > nBlocking {
			end = nBlocking
		}
		pts := make([]*write.Point, 0, end-start)
		for i := start; i < end; i++ {
			pts = append(pts, point(*measurement, "blocking", i, *base))
		}
		if err := blocking.WritePoint(ctx, pts...); err != nil {
			failures.add("blocking write of points %d..%d: %v", start, end-1, err)
			break
		}
	}

	// ---- non-blocking API: points nBlocking .. count-1
	if len(failures.all()) == 0 && nBlocking < *count {
		async := client.WriteAPI(*org, *bucket)
		errCh := async.Errors() // must be taken before the first write
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for err := range errCh { // closed by client.Close()
				failures.add("non-blocking write: %v", err)
			}
		}()
		for i := nBlocking; i < *count; i++ {
			async.WritePoint(point(*measurement, "batching", i, *base))
		}
		flushed := make(chan struct{})
		go func() {
			async.Flush()
			client.Close() // flushes again, stops the API, closes errCh
			close(flushed)
		}()
		select {
		case <-flushed:
			<-drained
		case <-ctx.Done():
			failures.add("non-blocking write: flush did not finish within %v", *timeout)
		}
	} else {
		client.Close()
	}

	if list := failures.all(); len(list) > 0 {
		for _, e := range list {
			fmt.Fprintln(os.Stderr, "error:", e)
		}
		os.Exit(1)
	}
	fmt.Println(*count)
}
