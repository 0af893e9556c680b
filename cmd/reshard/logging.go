package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// logFlags are --log-level and --log-format, every command's (README, Logs).
type logFlags struct {
	level  string
	format string
}

// logs is the process's logging: what the flags asked for, the logger built from them
// (before any command runs), and the attributes of the command's error line (the id of
// the migration a command runs).
var logs struct {
	flags    logFlags
	logger   *slog.Logger
	json     bool
	errAttrs []any
}

// setupLogs checks the flags and builds the logger writing to w: one line per record,
// text (key=value) or JSON. A bad value is refused before the command does anything.
func setupLogs(w io.Writer) error {
	// Nothing of an earlier command in the same process (tests run many) carries over.
	logs.logger, logs.json, logs.errAttrs = nil, false, nil
	var level slog.Level
	if err := level.UnmarshalText([]byte(logs.flags.level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", logs.flags.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(logs.flags.format) {
	case "text":
		logs.logger, logs.json = slog.New(slog.NewTextHandler(w, opts)), false
	case "json":
		logs.logger, logs.json = slog.New(slog.NewJSONHandler(w, opts)), true
	default:
		return fmt.Errorf("--log-format %q: use text or json", logs.flags.format)
	}
	return nil
}

// newLogger is the logger the flags asked for (warnings and errors on stderr in text
// before they are read).
func newLogger() *slog.Logger {
	if logs.logger == nil {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return logs.logger
}

// logErrorsWith gives the command's own lines (its error, cmdLogger's) these attributes:
// the id of the migration it runs.
func logErrorsWith(attrs ...any) { logs.errAttrs = attrs }

// cmdLogger is the logger of the command's own lines, with logErrorsWith's attributes (the
// executor's and the mover's loggers add each migration's id themselves).
func cmdLogger() *slog.Logger { return newLogger().With(logs.errAttrs...) }

// reportError writes the error a command ended with to w: one line, "reshard: ..." in
// text, a record at level ERROR with the command's attributes in JSON (so that every line
// of a command parses as JSON).
func reportError(w io.Writer, err error) {
	if logs.json {
		slog.New(slog.NewJSONHandler(w, nil)).Error("reshard: "+err.Error(), logs.errAttrs...)
		return
	}
	fmt.Fprintln(w, "reshard: "+err.Error())
}
