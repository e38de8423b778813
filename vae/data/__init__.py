"""Data: finding and reading datasets on the host (`datasets`: IDX, TFDS, npz, synthetic)
and turning them into device batches (`input_pipeline`: binarization, epoch order,
evaluation padding, streaming)."""
