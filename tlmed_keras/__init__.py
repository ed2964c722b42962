"""tlmed_keras: transfer learning for MedMNIST in Keras 3."""
