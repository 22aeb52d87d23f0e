"""The evaluation room: what is done with a trained checkpoint (evaluate, probes, fine-tuning,
class activation maps, export). It imports the training room, never the other way round."""
