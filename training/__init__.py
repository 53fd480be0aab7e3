"""GLaMa training: masks, losses, discriminator, perceptual loss, data, DDP trainer, evaluation."""
