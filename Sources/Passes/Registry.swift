/// Every pass a pipeline can name, in one place.
public let passRegistry: [any Pass.Type] = [
  Lora.self, Freeze.self, Autodiff.self, DeadCodeElimination.self,
  CommonSubexpressionElimination.self,
]
