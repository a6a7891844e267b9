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
// partition's backend. A worker sends one job at a time (one request, or
// with Options.Pipeline a few pipelined ones), so the
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

// send delivers rec and reads the answer with read. A reused connection
// the backend closed meanwhile is redialled once (the request had not
// reached it; a repeat would be deduped by X-Request-ID anyway).
func (w *wire) send(ctx context.Context, rec *buffer.Record, read func(*http.Response, io.Reader) answer) answer {
	recs := [1]*buffer.Record{rec}
	var out [1]answer
	w.sendAll(ctx, recs[:], out[:], read)
	return out[0]
}

// sendAll pipelines recs: every request is written in one buffered write,
// then the answers are read in order into out (len(recs)). The backend
// processes them one after another. An answer that ends the connection
// (Connection: close, a body cut short) leaves the requests behind it
// unsent (answer.unsent): the backend did not process them, or may not
// have, and they go again without counting an attempt. A connection that
// breaks after k answers gives the rest its error (the normal retry path;
// a repeat is deduped by X-Request-ID). A reused connection the backend had
// closed before it took the first request is redialled once, as in send.
func (w *wire) sendAll(ctx context.Context, recs []*buffer.Record, out []answer, read func(*http.Response, io.Reader) answer) {
	for try := 0; ; try++ {
		reused := w.c != nil
		if !reused {
			if err := w.dial(ctx); err != nil {
				for i := range out {
					out[i] = answer{err: err}
				}
				return
			}
		}
		n, err := w.exchange(ctx, recs, out, read, reused)
		if errors.Is(err, errStale) && try == 0 {
			continue
		}
		if err != nil {
			for i := n; i < len(out); i++ {
				out[i] = answer{err: err}
			}
		}
		return
	}
}

// exchange writes recs and reads their answers into out. It returns how
// many answers it settled, and the error that stopped it (errStale: the
// backend had closed the reused connection before it took any request).
//
// Each answer gets the whole timeout (the backend answers pipelined
// requests one after another). An answer that fails (a timeout, a broken
// connection) counts against its own request only: the requests behind it
// are marked unsent and go again without counting an attempt, so one slow
// or poisonous request cannot burn the attempts of the others (or open the
// breaker through them), while its own attempts still count towards its
// dead letter.
func (w *wire) exchange(ctx context.Context, recs []*buffer.Record, out []answer, read func(*http.Response, io.Reader) answer, reused bool) (int, error) {
	c := w.c
	_ = c.SetDeadline(time.Now().Add(w.timeout))
	expire := func() { _ = c.SetDeadline(time.Unix(1, 0)) }
	stop := context.AfterFunc(ctx, expire)
	defer func() { stop() }()
	fail := func(n int, err error) (int, error) {
		w.close()
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		return n, err
	}
	unsent := func(from int) {
		for k := from; k < len(recs); k++ {
			out[k] = answer{unsent: true, err: errUnsent}
		}
	}
	for _, rec := range recs {
		writeRequest(w.bw, rec, w.hostHdr)
	}
	if err := w.bw.Flush(); err != nil {
		if reused {
			return fail(0, errStale)
		}
		return fail(0, fmt.Errorf("writing request: %w", err))
	}
	for i, rec := range recs {
		if i > 0 {
			// A fresh deadline, re-armed so that a cancellation racing
			// the reset still expires it.
			stop()
			_ = c.SetReadDeadline(time.Now().Add(w.timeout))
			stop = context.AfterFunc(ctx, expire)
		}
		resp, err := readFinal(w.br, rec.Method)
		if err != nil {
			if i == 0 && reused && closedByPeer(err) && w.br.Buffered() == 0 {
				return fail(0, errStale)
			}
			w.close()
			if ctx.Err() != nil {
				return i, ctx.Err()
			}
			out[i] = answer{err: fmt.Errorf("reading answer: %w", err)}
			unsent(i + 1)
			return len(recs), nil
		}
		a := read(resp, resp.Body)
		out[i] = a
		// The connection is reusable only when the whole body was read
		// (and the protocol was not switched: 101 is final, and nothing
		// after it is HTTP/1.1).
		done := a.cut || resp.Close || resp.StatusCode == http.StatusSwitchingProtocols
		if !done {
			if _, err := resp.Body.Read(nil); err != nil && !errors.Is(err, io.EOF) {
				done = true
			}
		}
		if done {
			// Closed first: closing the body of a keep-alive answer
			// would read the rest of a cut body.
			w.close()
			resp.Body.Close()
			unsent(i + 1)
			return len(recs), nil
		}
		resp.Body.Close()
	}
	return len(recs), nil
}

// errUnsent is the error of a pipelined request behind an answer that
// ended the connection.
var errUnsent = errors.New("pipelined request not processed: an earlier answer ended the connection")

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
