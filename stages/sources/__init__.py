"""One module per photo source; the interface every source implements is described in stages.raw."""
