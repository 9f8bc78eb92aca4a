"""Benchmark data: ARO, COCO-IT / COCO100-IT / COCO-WL, ShapesWorld sets, behind one registry."""
