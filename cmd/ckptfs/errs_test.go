package main

import (
	"fmt"

	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/restorer"
)

var (
	dumperUnsupported = dumper.ErrUnsupported{PID: 1, FD: 3, Kind: "a tcp socket", What: "socket:[1]"}
	dumperAborted     = dumper.ErrAborted
	restorerMismatch  = restorer.ErrPageMismatch
)

func wrap(err error) error { return fmt.Errorf("context: %w", err) }
