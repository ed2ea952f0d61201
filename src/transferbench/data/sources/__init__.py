"""One module per photo source; the interface every source implements is described in transferbench.data.raw."""
