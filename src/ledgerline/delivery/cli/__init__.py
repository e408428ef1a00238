"""What the command line shows and reads beyond its arguments: the files a
bulk import reads and writes, and its progress."""
