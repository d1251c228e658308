package org.mlfsedge.demo;

import android.app.Activity;
import android.os.Bundle;
import android.view.View;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.CheckBox;
import android.widget.EditText;
import android.widget.Spinner;
import android.widget.Switch;
import android.widget.TextView;
import java.io.File;
import java.io.IOException;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.mlfsedge.demo.engine.MlfsEngine;
import org.mlfsedge.demo.engine.MlfsEngine.Subnet;

/**
 * One screen, two panels over the same text box, and a third for text generation:
 *
 * <ul>
 *   <li>ExecuTorch: the exported .pte sub-network (assets/pte/, from {@code mlfs-edge export});
 *   <li>the project's C++ engine over JNI: any sub-network of the one packed supernet
 *       (assets/mlfs/model-int8.mlfs, model-fp16.mlfs, from {@code mlfs-edge pack}), picked by hand
 *       or automatically as the largest that fits a latency budget on this phone;
 *   <li>generation: a sub-network of a packed decoder (assets/mlfs/decoder-int8.mlfs,
 *       decoder-fp16.mlfs and tokenizer.json, optional) continues a prompt; the text streams in
 *       token by token, with prefill and decode tokens/s.
 * </ul>
 *
 * All model work runs on one background thread; views are touched on the UI thread only.
 */
public class MainActivity extends Activity {
  private static final String[] DTYPES = {"int8", "fp16"};
  private static final int PROFILE_RUNS = 8;

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private final Map<String, MlfsEngine> engines = new HashMap<>();
  private final Map<String, String> lastByDtype = new HashMap<>(); // the side-by-side table
  private final Map<String, double[]> profiles = new HashMap<>(); // "dtype/seq" -> candidate latencies
  private PteClassifier pte;
  private WordPieceTokenizer tokenizer;
  private int maxLength = 128;
  private Subnet[] candidates = new Subnet[0]; // largest first, as the picker lists them
  private String[] labels = new String[0];

  private EditText input;
  private EditText budget;
  private TextView status;
  private TextView pteResult;
  private TextView engineResult;
  private TextView comparison;
  private Button runPte;
  private Button runEngine;
  private Switch fp16;
  private CheckBox auto;
  private Spinner subnetPicker;

  // Generation panel: decoders by dtype, the byte-level BPE of their tokenizer.json.
  private final Map<String, MlfsEngine> decoders = new HashMap<>();
  private final Map<String, String> lastGenByDtype = new HashMap<>();
  private ByteLevelBpeTokenizer bpe;
  private Subnet[] decoderSubnets = new Subnet[0];
  private int[] stopIds = new int[0];
  private volatile boolean stopRequested;
  private EditText genPrompt;
  private EditText genMaxTokens;
  private Switch genFp16;
  private Switch genDraft; // self-speculative decoding: a depth prefix of the sub-network drafts
  private Spinner genSubnetPicker;
  private Button runGenerate;
  private Button stopGenerate;
  private TextView genOutput;
  private TextView genStats;
  private TextView genComparison;

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    input = findViewById(R.id.text_input);
    budget = findViewById(R.id.budget_ms);
    status = findViewById(R.id.status);
    pteResult = findViewById(R.id.pte_result);
    engineResult = findViewById(R.id.engine_result);
    comparison = findViewById(R.id.comparison);
    runPte = findViewById(R.id.run_pte);
    runEngine = findViewById(R.id.run_engine);
    fp16 = findViewById(R.id.fp16_switch);
    auto = findViewById(R.id.auto_budget);
    subnetPicker = findViewById(R.id.subnet_picker);
    genPrompt = findViewById(R.id.gen_prompt);
    genMaxTokens = findViewById(R.id.gen_max_tokens);
    genFp16 = findViewById(R.id.gen_fp16_switch);
    genDraft = findViewById(R.id.gen_draft_switch);
    genSubnetPicker = findViewById(R.id.gen_subnet_picker);
    runGenerate = findViewById(R.id.run_generate);
    stopGenerate = findViewById(R.id.stop_generate);
    genOutput = findViewById(R.id.gen_output);
    genStats = findViewById(R.id.gen_stats);
    genComparison = findViewById(R.id.gen_comparison);
    runPte.setEnabled(false);
    runEngine.setEnabled(false);
    runGenerate.setEnabled(false);
    stopGenerate.setEnabled(false);
    runGenerate.setOnClickListener(v -> generate());
    stopGenerate.setOnClickListener(v -> stopRequested = true); // read by the token listener
    runPte.setOnClickListener(v -> classifyWithPte());
    runEngine.setOnClickListener(v -> runWithEngine());
    auto.setOnCheckedChangeListener((button, checked) -> {
      subnetPicker.setEnabled(!checked);
      budget.setEnabled(checked);
    });
    budget.setEnabled(false);
    status.setText(R.string.loading);
    worker.execute(this::loadModels);
  }

  @Override
  protected void onDestroy() {
    worker.execute(() -> {
      if (pte != null) pte.close();
      for (MlfsEngine e : engines.values()) e.close();
      for (MlfsEngine e : decoders.values()) e.close();
    });
    stopRequested = true; // a running generation ends at its next token
    worker.shutdown();
    super.onDestroy();
  }

  // --- background work ---------------------------------------------------------------------------

  private void loadModels() {
    StringBuilder problems = new StringBuilder();
    try {
      File dir = AssetFiles.copyTree(this, "pte");
      String[] manifests = AssetFiles.list(this, "pte", ".json");
      if (manifests.length == 0) throw new IOException("no .json manifest in assets/pte");
      pte = new PteClassifier(new File(dir, new File(manifests[0]).getName()));
      tokenizer = pte.tokenizer();
      maxLength = pte.maxLength();
    } catch (IOException | RuntimeException e) {
      problems.append("ExecuTorch model: ").append(e.getMessage()).append('\n');
    }
    try {
      for (String dtype : DTYPES) {
        File file = AssetFiles.copy(this, "mlfs/model-" + dtype + ".mlfs");
        MlfsEngine engine = MlfsEngine.open(file.getAbsolutePath());
        engine.setThreads(Math.max(1, Math.min(4, Runtime.getRuntime().availableProcessors())));
        engines.put(dtype, engine);
      }
      MlfsEngine int8 = engines.get("int8");
      Subnet[] smallestFirst = int8.defaultCandidates();
      candidates = new Subnet[smallestFirst.length];
      for (int i = 0; i < smallestFirst.length; i++) candidates[i] = smallestFirst[smallestFirst.length - 1 - i];
      labels = labelsOf(int8.metadataJson());
      if (tokenizer == null) {
        File vocab = AssetFiles.copy(this, "mlfs/vocab.txt");
        try (java.io.InputStream in = new java.io.FileInputStream(vocab)) {
          tokenizer = WordPieceTokenizer.fromVocab(in);
        }
      }
    } catch (IOException | RuntimeException e) {
      problems.append("C++ engine model: ").append(e.getMessage()).append('\n');
    }
    final String message = problems.length() == 0 ? getString(R.string.ready) : problems + getString(R.string.how_to_add_models);
    final String decoderProblem = loadDecoders();
    runOnUiThread(() -> {
      genStats.setText(decoderProblem);
      runGenerate.setEnabled(decoderProblem.isEmpty());
      String[] genNames = new String[decoderSubnets.length];
      for (int i = 0; i < genNames.length; i++) genNames[i] = decoderSubnets[i].name();
      ArrayAdapter<String> genAdapter = new ArrayAdapter<>(this, android.R.layout.simple_spinner_item, genNames);
      genAdapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item);
      genSubnetPicker.setAdapter(genAdapter);
      status.setText(message);
      runPte.setEnabled(pte != null);
      runEngine.setEnabled(engines.size() == DTYPES.length && tokenizer != null);
      String[] names = new String[candidates.length];
      for (int i = 0; i < names.length; i++) names[i] = candidates[i].name();
      ArrayAdapter<String> adapter = new ArrayAdapter<>(this, android.R.layout.simple_spinner_item, names);
      adapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item);
      subnetPicker.setAdapter(adapter);
    });
  }

  /** The generation panel's models (optional): "" when loaded, else what is missing. */
  private String loadDecoders() {
    try {
      File json = AssetFiles.copy(this, "mlfs/tokenizer.json");
      try (java.io.InputStream in = new java.io.FileInputStream(json)) {
        bpe = ByteLevelBpeTokenizer.fromTokenizerJson(in);
      }
      for (String dtype : DTYPES) {
        File file = AssetFiles.copy(this, "mlfs/decoder-" + dtype + ".mlfs");
        MlfsEngine d = MlfsEngine.open(file.getAbsolutePath());
        if (!d.isDecoder()) {
          d.close();
          throw new IOException(file.getName() + " is an encoder; pack a causal LM (e.g. smollm2)");
        }
        d.setThreads(Math.max(1, Math.min(4, Runtime.getRuntime().availableProcessors())));
        decoders.put(dtype, d);
      }
      decoderSubnets = decoderPalette(decoders.get("int8"));
      // Stop at the end-of-text / end-of-turn tokens the tokenizer knows (SmolLM2: 0 and 2).
      java.util.List<Integer> stops = new java.util.ArrayList<>();
      for (String t : new String[] {"<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>"}) {
        int id = bpe.tokenId(t);
        if (id >= 0 && id < decoders.get("int8").vocabSize()) stops.add(id);
      }
      stopIds = new int[stops.size()];
      for (int i = 0; i < stopIds.length; i++) stopIds[i] = stops.get(i);
      return "";
    } catch (IOException | RuntimeException e) {
      return getString(R.string.gen_missing) + "\n(" + e.getMessage() + ")";
    }
  }

  /**
   * Four decoder sub-networks, largest first: the full model; all layers at 2/3 of the key/value
   * groups and 3/4 of the MLP; 2/3 of the layers and 1/2 depth, narrower. Heads are whole groups
   * and MLP widths multiples of 32 (what a 4-bit file can slice too).
   */
  private static Subnet[] decoderPalette(MlfsEngine d) {
    int groups = d.numKvHeads();
    int group = d.numHeads() / groups;
    double[][] fractions = {{1, 1, 1}, {1, 2 / 3.0, 0.75}, {2 / 3.0, 2 / 3.0, 0.5}, {0.5, 1 / 3.0, 0.5}};
    java.util.List<Subnet> out = new java.util.ArrayList<>();
    for (double[] f : fractions) {
      int depth = Math.max(1, (int) Math.round(d.numLayers() * f[0]));
      int heads = group * Math.max(1, (int) Math.round(groups * f[1]));
      int mlp = Math.min(d.intermediate(), Math.max(32, (int) Math.round(d.intermediate() * f[2] / 32) * 32));
      Subnet s = d.uniform(depth, heads, mlp);
      if (!out.contains(s)) out.add(s);
    }
    return out.toArray(new Subnet[0]);
  }

  private static String[] labelsOf(String metadataJson) {
    try {
      JSONArray names = new JSONObject(metadataJson).optJSONArray("labels");
      String[] out = new String[names == null ? 0 : names.length()];
      for (int i = 0; i < out.length; i++) out[i] = names.getString(i);
      return out;
    } catch (JSONException e) {
      return new String[0]; // an encoder without labels: the panel shows the embedding's norm
    }
  }

  private void classifyWithPte() {
    final String text = input.getText().toString();
    busy(true);
    worker.execute(() -> {
      String line;
      try {
        PteClassifier.Result r = pte.classify(text); // first call also warms the program up
        r = pte.classify(text);
        line = String.format(Locale.US, "%s  %.3f\n%.2f ms · %.1f MiB · %s (%s)", r.label, r.score, r.latencyMs,
            pte.sizeBytes / 1048576.0, pte.name, pte.dtype);
      } catch (RuntimeException e) {
        line = "error: " + e.getMessage();
      }
      final String shown = line;
      runOnUiThread(() -> {
        pteResult.setText(shown);
        busy(false);
      });
    });
  }

  private void runWithEngine() {
    final String text = input.getText().toString();
    final String dtype = fp16.isChecked() ? "fp16" : "int8";
    final boolean automatic = auto.isChecked();
    final int picked = subnetPicker.getSelectedItemPosition();
    final String budgetText = budget.getText().toString();
    busy(true);
    worker.execute(() -> {
      String line;
      try {
        MlfsEngine engine = engines.get(dtype);
        WordPieceTokenizer.Encoding enc = tokenizer.encode(text, Math.min(maxLength, engine.maxPositions()), false);
        int[] ids = new int[enc.length];
        int[] mask = new int[enc.length];
        for (int i = 0; i < enc.length; i++) {
          ids[i] = (int) enc.inputIds[i];
          mask[i] = 1;
        }
        Subnet subnet = automatic ? pickUnderBudget(engine, dtype, enc.length, budgetText) : candidates[picked];
        engine.run(ids, mask, subnet); // warm-up: pages this slice's weights in
        long t0 = System.nanoTime();
        float[] out = engine.run(ids, mask, subnet);
        double ms = (System.nanoTime() - t0) / 1e6;
        String answer;
        if (labels.length == engine.outputDim()) {
          Scores s = Scores.softmax(out, 0, labels.length);
          answer = String.format(Locale.US, "%s  %.3f", labels[s.best], s.probability);
        } else {
          answer = String.format(Locale.US, "embedding[%d], norm %.3f", out.length, Scores.norm(out));
        }
        String stats = String.format(Locale.US, "%s %s: %.2f ms · %.1f MiB file · %.1f M layer params", dtype,
            subnet.name(), ms, engine.fileSizeBytes() / 1048576.0, engine.layerParams(subnet) / 1e6);
        lastByDtype.put(dtype, stats);
        line = answer + "\n" + stats + (automatic ? "\n(picked for a " + budgetText + " ms budget)" : "");
      } catch (RuntimeException e) {
        line = "error: " + e.getMessage();
      }
      final String shown = line;
      final String table = lastByDtype.containsKey("int8") || lastByDtype.containsKey("fp16")
          ? orDash(lastByDtype.get("int8")) + "\n" + orDash(lastByDtype.get("fp16")) : "";
      runOnUiThread(() -> {
        engineResult.setText(shown);
        comparison.setText(table);
        busy(false);
      });
    });
  }

  /**
   * The largest default-palette sub-network whose latency on this phone fits the budget. Latencies
   * are measured once per dtype and input length, then every budget reuses them.
   */
  private Subnet pickUnderBudget(MlfsEngine engine, String dtype, int seq, String budgetText) {
    double budgetMs;
    try {
      budgetMs = Double.parseDouble(budgetText.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("the budget must be a number of milliseconds");
    }
    String key = dtype + "/" + seq;
    double[] latency = profiles.get(key);
    if (latency == null) {
      latency = engine.pickLargestUnderBudget(candidates, budgetMs, seq, PROFILE_RUNS).latencyMs;
      profiles.put(key, latency);
    }
    double[] size = new double[candidates.length];
    for (int i = 0; i < size.length; i++) size[i] = engine.layerParams(candidates[i]);
    int best = MlfsEngine.pickUnderBudget(size, latency, budgetMs);
    if (best < 0) {
      int fastest = 0;
      for (int i = 1; i < latency.length; i++) if (latency[i] < latency[fastest]) fastest = i;
      throw new IllegalArgumentException(String.format(Locale.US,
          "nothing runs within %.2f ms here; the fastest, %s, takes %.2f ms", budgetMs,
          candidates[fastest].name(), latency[fastest]));
    }
    return candidates[best];
  }

  private void generate() {
    final String prompt = genPrompt.getText().toString();
    final String dtype = genFp16.isChecked() ? "fp16" : "int8";
    final boolean speculative = genDraft.isChecked();
    final int picked = genSubnetPicker.getSelectedItemPosition();
    final String maxText = genMaxTokens.getText().toString();
    stopRequested = false;
    busy(true);
    runGenerate.setEnabled(false);
    stopGenerate.setEnabled(true);
    genOutput.setText(prompt);
    worker.execute(() -> {
      String line;
      try {
        MlfsEngine d = decoders.get(dtype);
        Subnet subnet = decoderSubnets[Math.max(0, picked)];
        int maxNew;
        try {
          maxNew = Integer.parseInt(maxText.trim());
        } catch (NumberFormatException e) {
          throw new IllegalArgumentException("the number of new tokens must be a whole number");
        }
        int[] promptIds = bpe.encode(prompt);
        final int[] produced = new int[Math.max(0, Math.min(maxNew, d.maxPositions()))]; // no more fit
        final int[] count = {0};
        MlfsEngine.GenerateOptions options = new MlfsEngine.GenerateOptions().maxNewTokens(maxNew).stopIds(stopIds)
            .repetitionPenalty(1.1f);
        if (speculative) options.draft(subnet.prefix(Math.max(1, subnet.depth() / 3)));
        MlfsEngine.Generated g = d.generate(promptIds, subnet, options, id -> {
          produced[count[0]++] = id;
          // The whole continuation is decoded again: a character may span tokens (UTF-8 bytes).
          final String text = prompt + bpe.decodeComplete(java.util.Arrays.copyOf(produced, count[0]));
          runOnUiThread(() -> genOutput.setText(text));
          return !stopRequested;
        });
        final String text = prompt + bpe.decode(g.ids);
        runOnUiThread(() -> genOutput.setText(text));
        String draft = speculative ? String.format(Locale.US, " · draft accepted %.0f%%", 100 * g.acceptanceRate()) : "";
        String key = dtype + (speculative ? " speculative" : "");
        String stats = String.format(Locale.US, "%s %s: prefill %.1f tok/s (%d tokens) · decode %.1f tok/s "
            + "(%d new) · %.1f MiB file%s", key, subnet.name(), g.prefillTokensPerSecond(), g.promptTokens,
            g.decodeTokensPerSecond(), g.ids.length, d.fileSizeBytes() / 1048576.0, draft);
        lastGenByDtype.put(key, stats);
        line = stats;
      } catch (RuntimeException e) {
        line = "error: " + e.getMessage();
      }
      final String shown = line;
      // int8 vs fp16, each with and without the draft: the last run of each, side by side
      final String table = orDash(lastGenByDtype.get("int8")) + "\n" + orDash(lastGenByDtype.get("int8 speculative"))
          + "\n" + orDash(lastGenByDtype.get("fp16")) + "\n" + orDash(lastGenByDtype.get("fp16 speculative"));
      runOnUiThread(() -> {
        genStats.setText(shown);
        genComparison.setText(table);
        stopGenerate.setEnabled(false);
        busy(false);
      });
    });
  }

  private static String orDash(String s) {
    return s == null ? "—" : s;
  }

  private void busy(boolean on) {
    runPte.setEnabled(!on && pte != null);
    runEngine.setEnabled(!on && engines.size() == DTYPES.length && tokenizer != null);
    runGenerate.setEnabled(!on && decoders.size() == DTYPES.length && bpe != null);
    status.setVisibility(on ? View.VISIBLE : View.GONE);
    if (on) status.setText(R.string.running);
  }
}
