package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// BatchPath is where the edge delivers batches (its [delivery] batch_path).
const BatchPath = "/_edge/batch"

// edgeBatch serves POST /_edge/batch, the edge's batch delivery: a
// multipart/mixed body of application/http parts, each one complete HTTP/1.1
// request exactly as the edge would have sent it alone. Each part runs
// through the server's whole handler chain (request id, limits, auth, rate
// limits, idempotency by X-Request-ID, 421 for a process of another
// partition), as if it had come alone; the envelope carries no credentials
// of its own. The edge never puts two requests of one process in a batch,
// so the parts run concurrently (their writes share the store's group
// commit). The answer is 200 multipart/mixed with one application/http
// response per part, in part order. A malformed envelope is 400 or 415 and
// applies nothing.
func (s *Server) edgeBatch(w http.ResponseWriter, r *http.Request) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		s.writeProblem(w, r, problem(http.StatusUnsupportedMediaType, typeValidation,
			"a batch is multipart/mixed with a boundary, one application/http request per part"))
		return
	}
	var parts []*http.Request
	ctx := context.WithValue(r.Context(), batchKeysKey{}, &batchKeys{})
	mr := multipart.NewReader(r.Body, params["boundary"])
	var br *bufio.Reader // one for every part: each is read to its end before the next
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.writeProblem(w, r, batchError(len(parts), err))
			return
		}
		if br == nil {
			br = bufio.NewReader(p)
		} else {
			br.Reset(p)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			s.writeProblem(w, r, batchError(len(parts), err))
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			s.writeProblem(w, r, batchError(len(parts), err))
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.RemoteAddr, req.TLS = r.RemoteAddr, r.TLS
		parts = append(parts, req.WithContext(ctx))
	}
	answers := make([]*batchAnswer, len(parts))
	var wg sync.WaitGroup
	for i, req := range parts {
		answers[i] = &batchAnswer{header: http.Header{}}
		if req.URL.Path == BatchPath {
			s.writeProblem(answers[i], req, problem(http.StatusBadRequest, typeValidation, "a batch cannot hold a batch"))
			continue
		}
		wg.Go(func() { s.handler.ServeHTTP(answers[i], req) })
	}
	wg.Wait()
	// The answers are in memory already: the envelope is built whole and
	// sent with its length (no chunking), in one write.
	size := 0
	for _, a := range answers {
		size += a.body.Len() + 256
	}
	var out bytes.Buffer
	out.Grow(size)
	mw := multipart.NewWriter(&out)
	for _, a := range answers {
		// Writes to a bytes.Buffer cannot fail.
		_, _ = mw.CreatePart(partHeader)
		a.writeTo(&out)
	}
	_ = mw.Close()
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes()) // the edge retries what it did not get
}

// partHeader is the header of each part of a batch's answer.
var partHeader = textproto.MIMEHeader{"Content-Type": {"application/http"}}

func batchError(i int, err error) error {
	return problem(http.StatusBadRequest, typeValidation, "batch part %d: %v", i+1, err)
}

// batchAnswer records one part's response.
type batchAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *batchAnswer) Header() http.Header { return a.header }

func (a *batchAnswer) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

func (a *batchAnswer) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}

// writeTo appends the response as HTTP/1.1 bytes: the status line, the
// header sorted by name (values with line breaks flattened and trimmed,
// as http.Header.Write does), its own Content-Length, the body.
func (a *batchAnswer) writeTo(b *bytes.Buffer) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(a.status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(a.status))
	b.WriteString("\r\n")
	var names [16]string
	keys := names[:0]
	for k := range a.header {
		if k != "Content-Length" && k != "Transfer-Encoding" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range a.header[k] {
			if strings.ContainsAny(v, "\r\n") {
				v = headerBreaks.Replace(v)
			}
			v = textproto.TrimString(v)
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("Content-Length: ")
	b.WriteString(strconv.Itoa(a.body.Len()))
	b.WriteString("\r\n\r\n")
	b.Write(a.body.Bytes())
}

// headerBreaks flattens line breaks in a header value, as http.Header.Write.
var headerBreaks = strings.NewReplacer("\n", " ", "\r", " ")
