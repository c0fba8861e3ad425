package main

func runUp(args []string) int   { return 1 }
func runNode(args []string) int { return 1 }
func kubeVersion() string       { return "" }
