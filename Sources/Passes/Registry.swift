/// Every pass a pipeline can name, in one place.
public let passRegistry: [any Pass.Type] = [
  Lora.self, Freeze.self, Fuse.self, Autodiff.self, DeadCodeElimination.self,
  CommonSubexpressionElimination.self,
]
