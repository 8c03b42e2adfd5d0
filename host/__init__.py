"""NN-Factory host controller.

Data flows through the modules in this order (one module per concept):

    request -> assembler -> gates -> extraction -> artifact -> agent measurement
    -> campaign store -> predictor -> device profile -> search -> generated model

- ``host.supernets``   gated modular supernets (ResNet basic/bottleneck, MobileNetV2, ViT) and their registry
- ``host.gates``       the gate layout (gated layers, module counts, per-module costs) and gate validation
- ``host.extraction``  exact extraction of a static compact model from hard gates
- ``host.artifact``    compact model storage: safetensors weights + versioned JSON spec
"""

__version__ = "0.1.0"
