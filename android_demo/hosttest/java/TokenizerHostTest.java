import java.io.FileInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;
import org.mlfsedge.demo.WordPieceTokenizer;

/**
 * Host-JVM check of the app's tokenizer: args = vocab.txt, sentences file (one per line),
 * max length. Prints one line of space-separated ids per sentence, which the Python test
 * compares with the Hugging Face tokenizer's ids.
 */
public final class TokenizerHostTest {
  public static void main(String[] args) throws Exception {
    WordPieceTokenizer tok = WordPieceTokenizer.fromVocab(new FileInputStream(args[0]));
    List<String> lines = Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8);
    int maxLength = Integer.parseInt(args[2]);
    StringBuilder out = new StringBuilder();
    for (String line : lines) {
      WordPieceTokenizer.Encoding e = tok.encode(line, maxLength, false);
      for (int i = 0; i < e.length; i++) {
        if (i > 0) out.append(' ');
        out.append(e.inputIds[i]);
      }
      out.append('\n');
    }
    System.out.print(out);
  }
}
