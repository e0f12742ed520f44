"""The multiuser allocator daemon and its admin CLI: shares nodes fairly among users."""
