package mover

import (
	"io"
	"sync"
)

// pipeBuffers is how many 64 KiB buffers a copy pipe holds: enough slack that the source
// streams on while the target digests (each stall costs both servers wake-ups), small
// enough that memory stays flat (2 MiB per worker).
const pipeBuffers = 32

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// pipe is io.Pipe with a bounded buffer: writes queue up to pipeBuffers buffers instead of
// waiting for each read.
type pipe struct {
	ch   chan *[]byte
	done chan struct{} // closed by the reader's CloseWithError
	once sync.Once

	werr error // set before ch is closed
	rerr error // set before done is closed
	cur  *[]byte
	off  int
}

func newPipe() *pipe { return &pipe{ch: make(chan *[]byte, pipeBuffers), done: make(chan struct{})} }

// Write queues a copy of p; the writer hands over whole bufio-sized pieces.
func (p *pipe) Write(b []byte) (int, error) {
	buf := bufPool.Get().(*[]byte)
	*buf = append((*buf)[:0], b...)
	select {
	case p.ch <- buf:
		return len(b), nil
	case <-p.done:
		bufPool.Put(buf)
		return 0, p.rerr
	}
}

// CloseWrite ends the stream: the reader sees err, or io.EOF for nil.
func (p *pipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.ch)
}

func (p *pipe) Read(b []byte) (int, error) {
	for p.cur == nil || p.off == len(*p.cur) {
		if p.cur != nil {
			bufPool.Put(p.cur)
			p.cur = nil
		}
		buf, ok := <-p.ch
		if !ok {
			return 0, p.werr
		}
		p.cur, p.off = buf, 0
	}
	n := copy(b, (*p.cur)[p.off:])
	p.off += n
	return n, nil
}

// CloseRead stops the writer: its next Write fails with err.
func (p *pipe) CloseRead(err error) {
	p.once.Do(func() {
		p.rerr = err
		close(p.done)
	})
}
