package delivery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// wire is one worker's own HTTP/1.1 keep-alive connection to its
// partition's backend. A worker sends one request at a time, so the
// connection needs no reader and writer goroutines, no channels and no pool
// lock (what net/http's Transport spends per request); the pool is the set
// of workers, sized to max_in_flight. The request is written in one buffered
// write; the answer is read with http.ReadResponse.
type wire struct {
	host    string // host:port to dial
	hostHdr string // Host header
	timeout time.Duration

	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// newWire returns a wire for base (an http:// URL), or nil when base is not
// plain HTTP (the worker then uses the shared net/http client).
func newWire(base string, timeout time.Duration) *wire {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	return &wire{host: host, hostHdr: u.Host, timeout: timeout}
}

func (w *wire) close() {
	if w.c != nil {
		w.c.Close()
		w.c = nil
	}
}

func (w *wire) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: min(w.timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", w.host)
	if err != nil {
		return err
	}
	w.c = c
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, 16<<10)
		w.bw = bufio.NewWriterSize(c, 16<<10)
	} else {
		w.br.Reset(c)
		w.bw.Reset(c)
	}
	return nil
}

// errStale is a reused connection that the backend had closed.
var errStale = errors.New("stale keep-alive connection")

// send delivers rec and reads the answer (body up to maxBody). A reused
// connection the backend closed meanwhile is redialled once (the request
// had not reached it; a repeat would be deduped by X-Request-ID anyway).
func (w *wire) send(ctx context.Context, rec *buffer.Record, maxBody int64, read func(*http.Response, io.Reader) answer) answer {
	for try := 0; ; try++ {
		reused := w.c != nil
		if !reused {
			if err := w.dial(ctx); err != nil {
				return answer{err: err}
			}
		}
		a, err := w.roundTrip(ctx, rec, maxBody, read, reused)
		if errors.Is(err, errStale) && try == 0 {
			continue
		}
		if err != nil {
			return answer{err: err}
		}
		return a
	}
}

func (w *wire) roundTrip(ctx context.Context, rec *buffer.Record, maxBody int64, read func(*http.Response, io.Reader) answer, reused bool) (answer, error) {
	c := w.c
	_ = c.SetDeadline(time.Now().Add(w.timeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (answer, error) {
		w.close()
		if ctx.Err() != nil {
			return answer{}, ctx.Err()
		}
		return answer{}, err
	}
	writeRequest(w.bw, rec, w.hostHdr)
	if err := w.bw.Flush(); err != nil {
		if reused {
			return fail(errStale)
		}
		return fail(fmt.Errorf("writing request: %w", err))
	}
	resp, err := readFinal(w.br, rec.Method)
	if err != nil {
		if reused && closedByPeer(err) && w.br.Buffered() == 0 {
			return fail(errStale)
		}
		return fail(fmt.Errorf("reading answer: %w", err))
	}
	a := read(resp, resp.Body)
	// The connection is reusable only when the whole body was read.
	if a.cut || resp.Close {
		w.close()
	} else if _, err := resp.Body.Read(nil); err != nil && !errors.Is(err, io.EOF) {
		w.close()
	}
	resp.Body.Close()
	return a, nil
}

// maxInterim bounds the 1xx answers skipped before a final one.
const maxInterim = 8

// readFinal reads the final answer to a request, skipping 1xx interim
// answers (100 Continue, 103 Early Hints): read as final, one would leave
// the real answer on the connection for the next request to take. 101 is
// final (the edge never asks to switch protocols).
func readFinal(br *bufio.Reader, method string) (*http.Response, error) {
	for range maxInterim {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		resp.Body.Close() // a 1xx has no body
	}
	return nil, fmt.Errorf("more than %d interim (1xx) answers", maxInterim)
}

// closedByPeer: the backend closed the connection (an idle keep-alive
// connection it timed out) before answering.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// writeRequest writes rec as the HTTP/1.1 request the backend gets: the
// original escaped target, the record's headers and the edge's, the body.
func writeRequest(bw *bufio.Writer, rec *buffer.Record, host string) {
	bw.WriteString(rec.Method)
	bw.WriteByte(' ')
	bw.WriteString(rec.Path)
	if rec.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(rec.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range rec.Header {
		if skipHeader(k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	writeField(bw, "X-Request-Id", rec.ID)
	writeField(bw, "X-Process-Id", rec.Key)
	ik := rec.IdempotencyKey
	if ik == "" {
		ik = rec.ID
	}
	writeField(bw, "Idempotency-Key", ik)
	bw.WriteString("X-Edge-Attempt: ")
	bw.WriteString(strconv.Itoa(rec.Attempts))
	bw.WriteString("\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(rec.Body)))
	bw.WriteString("\r\n\r\n")
	bw.Write(rec.Body)
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// skipHeader: headers the edge sets itself, that are hop-by-hop, or Expect
// (the edge sends the body at once; the ingress removed them already,
// records from older versions may hold them).
func skipHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "X-Request-Id", "X-Process-Id", "Idempotency-Key", "X-Edge-Attempt", "Expect",
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}
