import java.io.FileInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import org.mlfsedge.demo.ByteLevelBpeTokenizer;
import org.mlfsedge.demo.WordPieceTokenizer;
import org.mlfsedge.demo.engine.MlfsEngine;
import org.mlfsedge.demo.engine.MlfsEngine.Subnet;

/**
 * Host-JVM driver of the JNI bridge, run by tests/test_jni_bridge.py, which checks what it prints
 * against the Python engine. Modes:
 *
 * <pre>
 *   run MODEL VOCAB SENTENCES MAXLEN SUBNET...   tokenize with the app's tokenizer, run each sub-network
 *                                                on the padded batch and on every sentence alone
 *   info MODEL                                   dims, dtype, size, palette, metadata
 *   budget MODEL                                 profile + pick under budget
 *   errors MODEL TRUNCATED CORRUPT NOT_MLFS      bad arguments must raise the expected Java exceptions
 *   open MODEL                                   open only (the Python side sets a bad MLFS_ISA)
 *   generate MODEL PROMPT CASE...                a decoder continues PROMPT (comma-separated ids) once
 *                                                per CASE, "SUBNET;max;temperature;topK;topP;penalty;
 *                                                seed;stops;fp16Cache;threads[;DRAFT;k]", streamed and not
 *   generrors DECODER ENCODER                    bad generate arguments must raise Java exceptions
 *   app TOKENIZER_JSON MODEL PROMPT_FILE SUBNET MAX   the app's generation path: BPE-encode the prompt,
 *                                                generate (streamed), decode the continuation
 * </pre>
 *
 * A SUBNET is "u:depth,heads,mlp" (engine.uniform) or "e:layers/heads/mlp" with comma-separated
 * values per layer (Subnet.of). Floats print with Float.toString, which reads back exactly.
 */
public final class MlfsEngineHostTest {
  public static void main(String[] args) throws Exception {
    switch (args[0]) {
      case "run":
        run(args);
        break;
      case "info":
        info(args[1]);
        break;
      case "budget":
        budget(args[1]);
        break;
      case "errors":
        errors(args[1], args[2], args[3], args[4]);
        break;
      case "generate":
        generate(args);
        break;
      case "generrors":
        generateErrors(args[1], args[2]);
        break;
      case "app":
        app(args);
        break;
      case "open":
        try (MlfsEngine e = MlfsEngine.open(args[1])) {
          System.out.println("OPENED " + e.dtype());
        } catch (RuntimeException | IOException e) {
          System.out.println("THROWN " + e.getClass().getName() + ": " + e.getMessage());
        }
        break;
      default:
        throw new IllegalArgumentException("unknown mode " + args[0]);
    }
    System.out.println("DONE");
  }

  static Subnet parseSubnet(MlfsEngine engine, String spec) {
    String[] parts = spec.substring(2).split("/");
    if (spec.startsWith("u:")) {
      int[] v = ints(parts[0]);
      return engine.uniform(v[0], v[1], v[2]);
    }
    return Subnet.of(ints(parts[0]), ints(parts[1]), ints(parts[2]));
  }

  static int[] ints(String csv) {
    return Arrays.stream(csv.split(",")).mapToInt(Integer::parseInt).toArray();
  }

  static void print(String tag, float[] values) {
    StringBuilder sb = new StringBuilder(tag);
    for (float v : values) sb.append(' ').append(Float.toString(v));
    System.out.println(sb);
  }

  static void run(String[] args) throws Exception {
    WordPieceTokenizer tok = WordPieceTokenizer.fromVocab(new FileInputStream(args[2]));
    List<String> sentences = Files.readAllLines(Paths.get(args[3]), StandardCharsets.UTF_8);
    int maxLength = Integer.parseInt(args[4]);
    try (MlfsEngine engine = MlfsEngine.open(args[1])) {
      // The app's input path: WordPiece ids as int[]; the batch is padded to its longest sentence.
      int rows = sentences.size();
      int[][] single = new int[rows][];
      int seq = 0;
      for (int r = 0; r < rows; r++) {
        WordPieceTokenizer.Encoding enc = tok.encode(sentences.get(r), maxLength, false);
        single[r] = new int[enc.length];
        for (int i = 0; i < enc.length; i++) single[r][i] = (int) enc.inputIds[i];
        seq = Math.max(seq, enc.length);
        StringBuilder sb = new StringBuilder("IDS " + r);
        for (int id : single[r]) sb.append(' ').append(id);
        System.out.println(sb);
      }
      int[] ids = new int[rows * seq];
      int[] mask = new int[rows * seq];
      for (int r = 0; r < rows; r++) {
        System.arraycopy(single[r], 0, ids, r * seq, single[r].length);
        Arrays.fill(mask, r * seq, r * seq + single[r].length, 1);
      }
      for (int a = 5; a < args.length; a++) {
        Subnet s = parseSubnet(engine, args[a]);
        System.out.println("SUBNET " + a + " " + s.name() + " " + Arrays.toString(s.layers()).replace(" ", ""));
        print("BATCH " + a + " " + rows + " " + engine.outputDim(), engine.run(ids, mask, rows, s));
        for (int r = 0; r < rows; r++) {
          int[] ones = new int[single[r].length];
          Arrays.fill(ones, 1);
          print("SINGLE " + a + " " + r, engine.run(single[r], ones, s));
        }
      }
    }
  }

  static void info(String model) throws IOException {
    try (MlfsEngine e = MlfsEngine.open(model)) {
      System.out.println("DTYPE " + e.dtype());
      System.out.println("SIZE " + e.fileSizeBytes());
      System.out.println("DIMS " + e.numLayers() + " " + e.hidden() + " " + e.numHeads() + " " + e.intermediate()
          + " " + e.vocabSize() + " " + e.maxPositions() + " " + e.numLabels() + " " + e.outputDim());
      System.out.println("FULL " + e.full().name() + " " + e.layerParams(e.full()));
      for (Subnet s : e.defaultCandidates()) {
        System.out.println("CANDIDATE " + s.name() + " " + Arrays.toString(s.layers()).replace(" ", "") + " "
            + e.layerParams(s));
      }
      System.out.println("METADATA " + e.metadataJson().replace('\n', ' '));
    }
  }

  static void budget(String model) throws IOException {
    try (MlfsEngine e = MlfsEngine.open(model)) {
      Subnet[] candidates = {e.uniform(1, 1, 8), e.uniform(2, 2, 16), e.full()};
      double[] ms = e.profile(candidates, 16, 3);
      System.out.println("PROFILE " + ms[0] + " " + ms[1] + " " + ms[2]);
      MlfsEngine.Pick roomy = e.pickLargestUnderBudget(candidates, 1e9, 16, 2);
      System.out.println("PICK_ROOMY " + roomy.index + " " + roomy.subnet.name() + " " + roomy.latencyMs.length);
      MlfsEngine.Pick tight = e.pickLargestUnderBudget(candidates, 1e-9, 16, 2);
      System.out.println("PICK_TIGHT " + tight.index + " " + (tight.subnet == null));
      // The bare rule, on the table of tests/test_engine_cli.py (Python's Engine.pick gives b, c, none).
      double[] acc = {0.70, 0.80, 0.85};
      double[] lat = {1.0, 2.0, 4.0};
      System.out.println("RULE " + MlfsEngine.pickUnderBudget(acc, lat, 3.0) + " "
          + MlfsEngine.pickUnderBudget(acc, lat, 10.0) + " " + MlfsEngine.pickUnderBudget(acc, lat, 0.5));
      e.setThreads(2);
      System.out.println("THREADS " + e.threads() + " " + e.run(new int[] {101, 2000, 102}, new int[] {1, 1, 1},
          e.full()).length);
    }
  }

  interface Case {
    void run() throws Exception;
  }

  static int failures = 0;

  static void expect(String name, Class<? extends Throwable> want, Case c) {
    try {
      c.run();
      failures++;
      System.out.println("FAIL " + name + ": no exception, expected " + want.getSimpleName());
    } catch (Throwable t) {
      boolean ok = t.getClass() == want;
      if (!ok) failures++;
      System.out.println((ok ? "OK " : "FAIL ") + name + ": " + t.getClass().getName() + ": " + t.getMessage());
    }
  }

  static void errors(String model, String truncated, String corrupt, String notMlfs) throws IOException {
    Class<IllegalArgumentException> iae = IllegalArgumentException.class;
    Class<IllegalStateException> ise = IllegalStateException.class;
    Class<IOException> ioe = IOException.class;
    expect("missing file", ioe, () -> MlfsEngine.open(model + ".missing"));
    expect("directory", ioe, () -> MlfsEngine.open(Paths.get(model).getParent().toString()));
    expect("truncated file", ioe, () -> MlfsEngine.open(truncated));
    expect("corrupt file", ioe, () -> MlfsEngine.open(corrupt));
    expect("not an .mlfs file", ioe, () -> MlfsEngine.open(notMlfs));
    expect("null path", iae, () -> MlfsEngine.open(null));
    expect("empty path", iae, () -> MlfsEngine.open(""));
    expect("NUL in path", iae, () -> MlfsEngine.open(model + "\u0000x"));
    expect("non-ASCII missing path", ioe, () -> MlfsEngine.open(model + "-caf\u00e9-\uD83D\uDE00.mlfs"));

    MlfsEngine e = MlfsEngine.open(model);
    Subnet full = e.full();
    int[] ids = {101, 2023, 2003, 1037, 3231, 102};
    int[] mask = {1, 1, 1, 1, 1, 1};
    expect("mask shorter than ids", iae, () -> e.run(ids, new int[] {1, 1, 1}, full));
    expect("null ids", iae, () -> e.run(null, mask, full));
    expect("null mask", iae, () -> e.run(ids, null, full));
    expect("empty ids", iae, () -> e.run(new int[0], new int[0], full));
    expect("id past the vocabulary", iae, () -> e.run(new int[] {101, e.vocabSize(), 102}, new int[] {1, 1, 1}, full));
    expect("negative id", iae, () -> e.run(new int[] {101, -5, 102}, new int[] {1, 1, 1}, full));
    expect("mask attends to nothing", iae, () -> e.run(ids, new int[6], full));
    expect("sequence longer than the positions", iae, () -> {
      int n = e.maxPositions() + 1;
      int[] longIds = new int[n];
      int[] longMask = new int[n];
      Arrays.fill(longIds, 1000);
      Arrays.fill(longMask, 1);
      e.run(longIds, longMask, full);
    });
    expect("batch does not divide", iae, () -> e.run(ids, mask, 4, full));
    expect("batch 0", iae, () -> e.run(ids, mask, 0, full));
    expect("null subnet", iae, () -> e.run(ids, mask, null));
    expect("layer out of range", iae, () -> e.run(ids, mask, Subnet.of(new int[] {0, 99}, new int[] {1, 1},
        new int[] {8, 8})));
    expect("negative layer", iae, () -> e.run(ids, mask, Subnet.of(new int[] {-1}, new int[] {1}, new int[] {8})));
    expect("layers not increasing", iae, () -> e.run(ids, mask, Subnet.of(new int[] {2, 1}, new int[] {1, 1},
        new int[] {8, 8})));
    expect("too many heads", iae, () -> e.run(ids, mask, Subnet.of(new int[] {0}, new int[] {e.numHeads() + 1},
        new int[] {8})));
    expect("zero heads", iae, () -> e.run(ids, mask, Subnet.of(new int[] {0}, new int[] {0}, new int[] {8})));
    expect("mlp too wide", iae, () -> e.run(ids, mask, Subnet.of(new int[] {0}, new int[] {1},
        new int[] {e.intermediate() + 1})));
    expect("empty subnet", iae, () -> e.run(ids, mask, Subnet.of(new int[0], new int[0], new int[0])));
    expect("ragged subnet", iae, () -> Subnet.of(new int[] {0, 1}, new int[] {1}, new int[] {8, 8}));
    expect("depth 0", iae, () -> e.uniform(0, 1, 8));
    expect("depth past the layers", iae, () -> e.uniform(e.numLayers() + 1, 1, 8));
    expect("uniform heads too many", iae, () -> e.uniform(1, e.numHeads() + 1, 8));
    expect("layer params of a bad subnet", iae, () -> e.layerParams(Subnet.of(new int[] {99}, new int[] {1},
        new int[] {8})));
    expect("threads 0", iae, () -> e.setThreads(0));
    expect("threads 1000", iae, () -> e.setThreads(1000));
    expect("profile no candidates", iae, () -> e.profile(new Subnet[0], 8, 1));
    expect("profile null candidate", iae, () -> e.profile(new Subnet[] {null}, 8, 1));
    expect("profile seq 0", iae, () -> e.profile(new Subnet[] {full}, 0, 1));
    expect("profile seq too long", iae, () -> e.profile(new Subnet[] {full}, e.maxPositions() + 1, 1));
    expect("profile runs 0", iae, () -> e.profile(new Subnet[] {full}, 8, 0));
    expect("pick budget 0", iae, () -> e.pickLargestUnderBudget(new Subnet[] {full}, 0, 8, 1));
    expect("pick budget NaN", iae, () -> e.pickLargestUnderBudget(new Subnet[] {full}, Double.NaN, 8, 1));
    expect("rule lengths differ", iae, () -> MlfsEngine.pickUnderBudget(new double[] {1, 2}, new double[] {1}, 5));
    expect("rule null scores", iae, () -> MlfsEngine.pickUnderBudget(null, new double[] {1}, 5));
    expect("rule negative budget", iae, () -> MlfsEngine.pickUnderBudget(new double[] {1}, new double[] {1}, -1));
    // The engine still works after all of that.
    float[] out = e.run(ids, mask, full);
    System.out.println("STILL_WORKS " + out.length);
    e.close();
    e.close();  // closing twice is harmless
    expect("run after close", ise, () -> e.run(ids, mask, full));
    expect("dtype after close", ise, e::dtype);
    expect("uniform after close", ise, () -> e.uniform(1, 1, 8));
    expect("profile after close", ise, () -> e.profile(new Subnet[] {full}, 8, 1));
    System.out.println("FAILURES " + failures);
  }

  static String join(String tag, int[] ids) {
    StringBuilder sb = new StringBuilder(tag);
    for (int v : ids) sb.append(' ').append(v);
    return sb.toString();
  }

  static void generate(String[] args) throws IOException {
    int[] prompt = ints(args[2]);
    try (MlfsEngine e = MlfsEngine.open(args[1])) {
      System.out.println("DECODER " + e.isDecoder() + " " + e.numKvHeads() + " " + e.vocabSize());
      for (int i = 3; i < args.length; i++) {
        String[] f = args[i].split(";", -1);
        Subnet subnet = f[0].equals("full") ? e.full() : parseSubnet(e, f[0]);
        int maxNew = Integer.parseInt(f[1]);
        float temperature = Float.parseFloat(f[2]);
        int topK = Integer.parseInt(f[3]);
        float topP = Float.parseFloat(f[4]);
        float penalty = Float.parseFloat(f[5]);
        long seed = Long.parseLong(f[6]);
        int[] stops = f[7].isEmpty() ? new int[0] : ints(f[7]);
        MlfsEngine.GenerateOptions o = new MlfsEngine.GenerateOptions().maxNewTokens(maxNew).temperature(temperature)
            .topK(topK).topP(topP).repetitionPenalty(penalty).seed(seed).stopIds(stops)
            .fp16Cache(Boolean.parseBoolean(f[8]));
        if (f.length > 10) o.draft(parseSubnet(e, f[10])).draftK(Integer.parseInt(f[11]));  // speculative
        e.setThreads(Integer.parseInt(f[9]));
        final StringBuilder streamed = new StringBuilder("STREAM " + i);
        MlfsEngine.Generated g = e.generate(prompt, subnet, o, id -> {
          streamed.append(' ').append(id);
          return true;
        });
        System.out.println("SUBNET " + i + " " + subnet.name());
        System.out.println(join("GEN " + i, g.ids));
        System.out.println(streamed);
        System.out.println("RATES " + i + " " + g.promptTokens + " " + g.prefillTokensPerSecond() + " "
            + g.decodeTokensPerSecond());
        System.out.println("DRAFT " + i + " " + g.rounds + " " + g.drafted + " " + g.accepted);
        // Without a listener, through the plain-array overload (greedy/sampled alike).
        if (penalty == 1f && !Boolean.parseBoolean(f[8])) {
          System.out.println(join("PLAIN " + i, e.generate(prompt, subnet, maxNew, temperature, topK, topP, seed, stops)));
        }
      }
      // A listener that says stop after 3 tokens ends the generation there.
      final int[] seen = {0};
      MlfsEngine.Generated cut = e.generate(prompt, e.full(), new MlfsEngine.GenerateOptions().maxNewTokens(10),
          id -> ++seen[0] < 3);
      System.out.println("CUT " + cut.ids.length + " " + seen[0]);
    }
  }

  static void app(String[] args) throws IOException {
    ByteLevelBpeTokenizer bpe;
    try (FileInputStream in = new FileInputStream(args[1])) {
      bpe = ByteLevelBpeTokenizer.fromTokenizerJson(in);
    }
    String prompt = new String(Files.readAllBytes(Paths.get(args[3])), StandardCharsets.UTF_8);
    try (MlfsEngine e = MlfsEngine.open(args[2])) {
      Subnet subnet = args[4].equals("full") ? e.full() : parseSubnet(e, args[4]);
      int[] ids = bpe.encode(prompt);
      System.out.println(join("PROMPT", ids));
      final StringBuilder shown = new StringBuilder();
      final int[] produced = new int[Integer.parseInt(args[5])];
      final int[] n = {0};
      MlfsEngine.Generated g = e.generate(ids, subnet,
          new MlfsEngine.GenerateOptions().maxNewTokens(produced.length), id -> {
            produced[n[0]++] = id;
            shown.setLength(0);
            shown.append(bpe.decodeComplete(Arrays.copyOf(produced, n[0])));  // what the app's text box shows
            return true;
          });
      System.out.println("SUBNET " + subnet.name());
      System.out.println(join("GEN", g.ids));
      String text = bpe.decode(g.ids);
      System.out.println("SHOWN_IS_PREFIX " + text.startsWith(shown.toString()));
      System.out.println("TEXT " + BpeTokenizerHostTest.hex(text.getBytes(StandardCharsets.UTF_8)));
      System.out.println("RATES " + g.prefillTokensPerSecond() + " " + g.decodeTokensPerSecond());
    }
  }

  static void generateErrors(String decoder, String encoder) throws IOException {
    Class<IllegalArgumentException> iae = IllegalArgumentException.class;
    Class<IllegalStateException> ise = IllegalStateException.class;
    MlfsEngine enc = MlfsEngine.open(encoder);
    MlfsEngine.GenerateOptions greedy = new MlfsEngine.GenerateOptions().maxNewTokens(4);
    int[] prompt = {1, 2, 3};
    expect("generate on an encoder", iae, () -> enc.generate(prompt, enc.full(), greedy, null));
    enc.close();
    MlfsEngine e = MlfsEngine.open(decoder);
    Subnet full = e.full();
    int v = e.vocabSize();
    expect("run on a decoder", iae, () -> e.run(prompt, new int[] {1, 1, 1}, full));
    expect("null prompt", iae, () -> e.generate(null, full, greedy, null));
    expect("empty prompt", iae, () -> e.generate(new int[0], full, greedy, null));
    expect("id past the vocabulary", iae, () -> e.generate(new int[] {1, v}, full, greedy, null));
    expect("negative id", iae, () -> e.generate(new int[] {-1}, full, greedy, null));
    expect("prompt fills the positions", iae, () -> e.generate(new int[e.maxPositions()], full, greedy, null));
    expect("max new tokens 0", iae, () -> e.generate(prompt, full, new MlfsEngine.GenerateOptions().maxNewTokens(0),
        null));
    expect("max new tokens huge", iae, () -> e.generate(prompt, full,
        new MlfsEngine.GenerateOptions().maxNewTokens(Integer.MAX_VALUE), null));
    expect("heads not whole groups", iae, () -> e.generate(prompt, Subnet.of(new int[] {0}, new int[] {1},
        new int[] {e.intermediate()}), greedy, null));
    expect("uniform heads not whole groups", iae, () -> e.uniform(1, 1, e.intermediate()));
    expect("mlp too wide", iae, () -> e.generate(prompt, Subnet.of(new int[] {0}, new int[] {e.numHeads()},
        new int[] {e.intermediate() + 1}), greedy, null));
    expect("null subnet", iae, () -> e.generate(prompt, null, greedy, null));
    expect("null options", iae, () -> e.generate(prompt, full, null, null));
    expect("stop id outside", iae, () -> e.generate(prompt, full, new MlfsEngine.GenerateOptions().stopIds(v), null));
    expect("null stop ids", iae, () -> new MlfsEngine.GenerateOptions().stopIds((int[]) null));
    expect("negative temperature", iae, () -> e.generate(prompt, full,
        new MlfsEngine.GenerateOptions().temperature(-1f), null));
    expect("top_p 0", iae, () -> e.generate(prompt, full,
        new MlfsEngine.GenerateOptions().temperature(1f).topP(0f), null));
    expect("negative top_k", iae, () -> e.generate(prompt, full, new MlfsEngine.GenerateOptions().topK(-1), null));
    expect("listener throws", UnsupportedOperationException.class, () -> e.generate(prompt, full, greedy, id -> {
      throw new UnsupportedOperationException("listener refused token " + id);
    }));
    System.out.println(join("STILL_GENERATES", e.generate(prompt, full, greedy, null).ids));
    e.close();
    expect("generate after close", ise, () -> e.generate(prompt, full, greedy, null));
    System.out.println("FAILURES " + failures);
  }
}
