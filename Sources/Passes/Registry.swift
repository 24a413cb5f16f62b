/// Every pass a pipeline can name, in one place.
public let passRegistry: [any Pass.Type] = [
  Lora.self, Freeze.self, Reassociate.self, Fuse.self, Decode.self, Autodiff.self,
  DeadCodeElimination.self,
  CommonSubexpressionElimination.self,
]
