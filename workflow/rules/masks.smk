# Object masks and per-pixel confidences: the synthetic segmenter, or BiSeNet / PSPNet on real data.


rule segment:
    """Masks (soft borders) and confidences of every image of the dataset."""
    conda:
        ENV
    input:
        images=all_images,
        net=SEGMENT_NET,
    output:
        masks=expand(f"{RES}/segment/{{image}}_mask.png", image=IMAGES),
        conf=expand(f"{RES}/segment/{{image}}_conf.npy", image=IMAGES),
    params:
        out=out_dir,
        **SEGMENT_PARAMS,
    resources:
        gpu=1,
    log:
        f"{RES}/logs/segment.log",
    benchmark:
        f"{RES}/benchmarks/segment.tsv"
    shell:
        SEGMENT_SHELL
