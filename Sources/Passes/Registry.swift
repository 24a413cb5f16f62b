/// Every pass a pipeline can name, in one place.
public let passRegistry: [any Pass.Type] = [
  Lora.self, Freeze.self, Fold.self, Reassociate.self, Fuse.self, Decode.self, Merge.self,
  Unmerge.self, Autodiff.self, Capture.self, Patch.self, Add.self, Ablate.self,
  DeadCodeElimination.self,
  CommonSubexpressionElimination.self,
]
