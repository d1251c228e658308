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
 * One screen, two panels over the same text box:
 *
 * <ul>
 *   <li>ExecuTorch: the exported .pte sub-network (assets/pte/, from {@code mlfs-edge export});
 *   <li>the project's C++ engine over JNI: any sub-network of the one packed supernet
 *       (assets/mlfs/model-int8.mlfs, model-fp16.mlfs, from {@code mlfs-edge pack}), picked by hand
 *       or automatically as the largest that fits a latency budget on this phone.
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
    runPte.setEnabled(false);
    runEngine.setEnabled(false);
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
    });
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
    runOnUiThread(() -> {
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

  private static String orDash(String s) {
    return s == null ? "—" : s;
  }

  private void busy(boolean on) {
    runPte.setEnabled(!on && pte != null);
    runEngine.setEnabled(!on && engines.size() == DTYPES.length && tokenizer != null);
    status.setVisibility(on ? View.VISIBLE : View.GONE);
    if (on) status.setText(R.string.running);
  }
}
