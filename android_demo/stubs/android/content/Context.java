package android.content;

import android.content.res.AssetManager;
import java.io.File;

public abstract class Context {
  public Context() {
    throw new RuntimeException("Stub!");
  }

  public abstract AssetManager getAssets();

  public abstract File getFilesDir();

  public final String getString(int resId) {
    throw new RuntimeException("Stub!");
  }
}
