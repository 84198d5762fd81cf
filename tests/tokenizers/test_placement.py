from trimodal.tokenizers.placement import CodecLoad, cpu_only, gpu_placement, with_device


def test_text_runs_on_cpus_only():
    assert cpu_only("text") and not cpu_only("image") and not cpu_only("audio")


def test_gpu_placement_one_gpu_per_codec_actor_when_the_cluster_has_gpus():
    assert gpu_placement("image", {}, None, 8.0) == (1.0, {"device": "cuda"})
    assert gpu_placement("audio", {"device": "cuda:1"}, None, 8.0) == (1.0, {"device": "cuda:1"})  # named device wins
    assert gpu_placement("image", {}, None, 0.0) == (0.0, {})
    assert gpu_placement("text", {"num_threads": 2}, None, 8.0) == (0.0, {"num_threads": 2})


def test_gpu_placement_follows_the_config():
    assert gpu_placement("audio", {}, 0.5, 8.0) == (0.5, {"device": "cuda"})
    assert gpu_placement("image", {}, 0.0, 8.0) == (0.0, {})
    assert gpu_placement("text", {}, 1.0, 8.0) == (1.0, {})  # text never loads on a GPU


def test_with_device_leaves_text_alone():
    opts = {"batch_size": 4}
    assert with_device("image", opts, "cpu") == {"batch_size": 4, "device": "cpu"}
    assert with_device("text", opts, "cpu") == opts
    assert with_device("audio", opts, None) == opts
    assert "device" not in opts  # never changed in place


def test_codec_load_is_plain_data_that_loads(text_tokenizer_path):
    import pickle

    codec = CodecLoad("text", "sentencepiece", str(text_tokenizer_path), {}, threads=2)
    assert pickle.loads(pickle.dumps(codec)) == codec  # shipped to actors and replicas
    assert codec.load().modality == "text"
