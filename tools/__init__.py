"""The scripts that made the small artifacts ``checkpoints/`` ships (the SN-GAN on MNIST, its
digit judge, the scenes vote's classifier): rerun them to rebuild those files, not to use the
toolkit. How each file was made, with its time: checkpoints/README.md."""
