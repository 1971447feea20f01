"""dermcam model toolchain: train, export, quantise and document skin9 classifiers."""
