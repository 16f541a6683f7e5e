"""How residuals travel between the denoising loop and the ControlNet service: the
`ResidualSource` protocol and its in-process and gRPC implementations."""
