// Command ferretdb-sqlite runs FerretDB 1.x on its SQLite backend for the test suite.
//
// Why a wrapper and not `go install .../cmd/ferretdb@v1.24.x`: FerretDB's own command
// panics at start-up unless build/version/version.txt was generated from a git
// checkout (`bin/task gen-version`), and the module zip that the Go proxy serves does
// not contain it. The embeddable package (github.com/FerretDB/FerretDB/ferretdb) is the
// same server without that check.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const modulePath = "github.com/FerretDB/FerretDB"

// ferretDBVersion is the FerretDB module version this binary was built with.
func ferretDBVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == modulePath {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite backend directory URL (ends with /)")
	debugLog := flag.Bool("debug", false, "log at debug level")
	showVersion := flag.Bool("version", false, "print the FerretDB version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Printf("FerretDB %s (SQLite backend)\n", ferretDBVersion())
		return
	}

	level := slog.LevelInfo
	if *debugLog {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		logger.Error("start failed", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger.Info("FerretDB listening", "version", ferretDBVersion(), "addr", *listen, "sqlite", *sqliteURL)
	if err := f.Run(ctx); err != nil {
		logger.Error("run failed", "error", err)
		os.Exit(1)
	}
}
