package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// printer writes a command's result in the format -o chose: the value as JSON for
// scripts, or the command's own text for people. The root command picks it once from the
// flag (newPrinter), so a command never asks which format is on.
type printer interface {
	// print writes v as JSON, or runs text, which writes the text form to w.
	print(w io.Writer, v any, text func() error) error
	// isJSON reports whether results are JSON: what is only for people (progress,
	// "measuring..." lines) then stays off.
	isJSON() bool
}

// result is the printer of the running command, set by the root command from -o.
var result printer = textPrinter{}

func newPrinter(format string) (printer, error) {
	switch format {
	case "json":
		return jsonPrinter{}, nil
	case "text":
		return textPrinter{}, nil
	}
	return nil, fmt.Errorf("-o %q: use text or json", format)
}

type jsonPrinter struct{}

func (jsonPrinter) print(w io.Writer, v any, _ func() error) error { return writeJSON(w, v) }
func (jsonPrinter) isJSON() bool                                   { return true }

type textPrinter struct{}

func (textPrinter) print(_ io.Writer, _ any, text func() error) error { return text() }
func (textPrinter) isJSON() bool                                      { return false }

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal: long work shows progress there and stays
// quiet when piped or redirected (to a file or /dev/null alike).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
