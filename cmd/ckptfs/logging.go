package main

// closeLog closes the diagnostics log file, if one is open.
func closeLog() {}
