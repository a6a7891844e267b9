package api

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
	"strconv"
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
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.writeProblem(w, r, batchError(len(parts), err))
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(p))
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
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	for _, a := range answers {
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}})
		if err != nil {
			return // the edge lost the connection; it retries what it did not get
		}
		if err := a.writeTo(pw); err != nil {
			return
		}
	}
	_ = mw.Close()
}

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

// writeTo writes the response as HTTP/1.1 bytes.
func (a *batchAnswer) writeTo(w io.Writer) error {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", a.status, http.StatusText(a.status))
	a.header.Del("Content-Length")
	a.header.Del("Transfer-Encoding")
	if err := a.header.Write(bw); err != nil {
		return err
	}
	bw.WriteString("Content-Length: " + strconv.Itoa(a.body.Len()) + "\r\n\r\n")
	bw.Write(a.body.Bytes())
	return bw.Flush()
}
