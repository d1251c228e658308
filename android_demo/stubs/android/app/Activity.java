package android.app;

import android.content.Context;
import android.os.Bundle;
import android.view.View;

public class Activity extends Context {
  public Activity() {
    throw new RuntimeException("Stub!");
  }

  protected void onCreate(Bundle savedInstanceState) {
    throw new RuntimeException("Stub!");
  }

  protected void onDestroy() {
    throw new RuntimeException("Stub!");
  }

  public void setContentView(int layoutResID) {
    throw new RuntimeException("Stub!");
  }

  public <T extends View> T findViewById(int id) {
    throw new RuntimeException("Stub!");
  }

  public final void runOnUiThread(Runnable action) {
    throw new RuntimeException("Stub!");
  }

  @Override
  public android.content.res.AssetManager getAssets() {
    throw new RuntimeException("Stub!");
  }

  @Override
  public java.io.File getFilesDir() {
    throw new RuntimeException("Stub!");
  }
}
