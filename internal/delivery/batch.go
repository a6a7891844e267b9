package delivery

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"sync"

	"github.com/flowedge/flowedge/internal/buffer"
)

// Batch delivery: POST {backend}{BatchPath}, Content-Type multipart/mixed,
// one application/http part per record holding the complete HTTP/1.1
// request the edge would have sent alone (original escaped target, headers
// with X-Request-ID and X-Edge-Attempt, body). The answer is 200
// multipart/mixed with one application/http response per part, in order.
// A batch never holds two records of one key (the loop sends only heads of
// ordering keys), so a failed part can never be overtaken by a later one
// of its key.

// partOverhead estimates a part's framing and the headers the edge adds.
const partOverhead = 512

// encodedSize estimates rec's size inside a batch.
func encodedSize(rec *buffer.Record) int {
	n := partOverhead + len(rec.Method) + len(rec.Path) + len(rec.RawQuery) + len(rec.Body) + len(rec.Key) + len(rec.IdempotencyKey)
	for k, vs := range rec.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

var batchBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

var partHeader = textproto.MIMEHeader{"Content-Type": {"application/http"}}

// EncodeBatch writes the multipart/mixed body of a batch of recs to w and
// returns its Content-Type. host is the backend's host (the Host line).
func EncodeBatch(w io.Writer, host string, recs []*buffer.Record) (string, error) {
	mw := multipart.NewWriter(w)
	for _, rec := range recs {
		pw, err := mw.CreatePart(partHeader)
		if err != nil {
			return "", fmt.Errorf("batch part %s: %w", rec.ID, err)
		}
		bw := bufio.NewWriter(pw)
		writeRequest(bw, rec, host)
		if err := bw.Flush(); err != nil {
			return "", fmt.Errorf("batch part %s: %w", rec.ID, err)
		}
	}
	if err := mw.Close(); err != nil {
		return "", fmt.Errorf("batch: %w", err)
	}
	return "multipart/mixed; boundary=" + mw.Boundary(), nil
}

// sendBatch delivers items in one batch request and returns one answer per
// item, in order. Parts the backend did not answer (the connection cut after
// k parts, a malformed part) get an error answer: retryable, as a lost
// connection is. fallback is true when the backend does not speak batches
// (404, 405, 415): nothing was attempted, and the partition now sends
// single requests (logged once). singly is true when the backend refused
// the envelope with a 4xx but 408/429 (413: its body limit is below
// batch_bytes; 400, 401, 403, 422, …: it would not take this envelope):
// nothing was applied, the backend is up (no breaker evidence), and this
// job's records go as single requests.
func (l *loop) sendBatch(ctx context.Context, items []*item) (answers []answer, fallback, singly bool) {
	answers = make([]answer, len(items))
	fail := func(from int, err error) []answer {
		for i := from; i < len(answers); i++ {
			answers[i] = answer{err: err}
		}
		return answers
	}
	base := l.e.opt.BackendURL(l.p)
	u, err := url.Parse(base + l.e.opt.BatchPath)
	if err != nil {
		return fail(0, fmt.Errorf("building batch request: %w", err)), false, false
	}
	recs := make([]*buffer.Record, len(items))
	for i, it := range items {
		recs[i] = it.rec
	}
	buf := batchBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer batchBufs.Put(buf)
	ct, err := EncodeBatch(buf, u.Host, recs)
	if err != nil {
		return fail(0, err), false, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(buf.Bytes()))
	if err != nil {
		return fail(0, fmt.Errorf("building batch request: %w", err)), false, false
	}
	req.Header.Set("Content-Type", ct)
	resp, err := l.e.batchC.Do(req)
	if err != nil {
		return fail(0, err), false, false
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if l.batchOff.CompareAndSwap(false, true) {
			l.gate.log.Warn("protocol fallback: the backend does not speak batch delivery; sending single requests",
				"batch_path", l.e.opt.BatchPath, "status", resp.StatusCode)
		}
		return nil, true, false
	case http.StatusRequestEntityTooLarge:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if l.batchBig.CompareAndSwap(false, true) {
			l.gate.log.Warn("the backend refused a batch as too large (413): lower [delivery] batch_bytes to its body limit; sending such batches' records singly",
				"batch_bytes", l.e.opt.BatchBytes, "bytes", buf.Len())
		}
		return nil, false, true
	case http.StatusOK:
	default:
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
			// The backend refused the envelope (400, 401, 403, 422, …),
			// so it is up: no breaker evidence, nothing applied. Each
			// record then gets its own answer as a single request.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			if l.e.batchRefused.CompareAndSwap(false, true) {
				l.gate.log.Warn("the backend refused a batch envelope; sending such batches' records singly",
					"batch_path", l.e.opt.BatchPath, "status", resp.StatusCode)
			}
			return nil, false, true
		}
		// The envelope itself failed: every record gets that answer
		// (a 5xx, 408 or 429 is retried per record, like a single
		// request's).
		a := l.readAnswer(resp, resp.Body)
		if resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
			return fail(0, fmt.Errorf("batch answered %d", resp.StatusCode)), false, false
		}
		for i := range answers {
			answers[i] = a
		}
		return answers, false, false
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return fail(0, fmt.Errorf("batch answer is not multipart/mixed: %q", resp.Header.Get("Content-Type"))), false, false
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for i, it := range items {
		part, err := mr.NextPart()
		if err != nil {
			return fail(i, fmt.Errorf("batch answer ended after %d of %d parts: %w", i, len(items), err)), false, false
		}
		br := bufio.NewReader(part)
		pr, err := readFinal(br, it.rec.Method)
		if err != nil {
			return fail(i, fmt.Errorf("batch answer part %d: %w", i+1, err)), false, false
		}
		a := l.readAnswer(pr, pr.Body)
		pr.Body.Close()
		if a.cut && a.err == nil && int64(len(a.body)) < l.e.opt.MaxResponseBody {
			// A part cut short: the connection broke mid-part.
			return fail(i, fmt.Errorf("batch answer part %d cut short", i+1)), false, false
		}
		answers[i] = a
	}
	return answers, false, false
}
