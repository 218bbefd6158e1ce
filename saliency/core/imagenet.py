"""The input normalisation of every ImageNet-pretrained network here: the U-Net's encoders,
the voting classifiers and the converted TFLite MobileNetV2 (torchvision's constants)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
