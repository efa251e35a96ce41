# Object masks and per-pixel confidences: the synthetic segmenter, or BiSeNet / PSPNet on real data.


rule segment:
    """Masks (soft borders) and confidences of every image of the dataset."""
    conda:
        ENV
    input:
        images=all_images,
        net=SYN["segmenter"] if SYNTHETIC else D.get("parser", []),
    output:
        masks=expand(f"{RES}/segment/{{image}}_mask.png", image=IMAGES),
        conf=expand(f"{RES}/segment/{{image}}_conf.npy", image=IMAGES),
    params:
        out=out_dir,
        command="segment" if SYNTHETIC else f"segment-real --category {D.get('parse')}",
        size=D["size"],
        parser_size=f"--parser-size {config['segment']['parser_size']}" if SYNTHETIC else "",
        faithful="" if SYNTHETIC else ("--faithful" if config["segment"]["faithful"] else "--no-faithful"),
        confidence=config["segment"]["confidence"],
        device=config["device"],
    resources:
        gpu=1,
    log:
        f"{RES}/logs/segment.log",
    benchmark:
        f"{RES}/benchmarks/segment.tsv"
    shell:
        "gan2shape {params.command} --checkpoint {input.net} --images {input.images} --image-size {params.size} "
        "{params.parser_size} {params.faithful} --confidence {params.confidence} --device {params.device} "
        "--out-dir {params.out} > {log} 2>&1"
